# The relay pump: bytes between an established TlsConnection and a plain
# socket, in C, without the GIL, one Python call per readiness event and no
# Python object per chunk. Included by _fastpath.pyx.
#
# Each direction owns one fixed buffer. It is filled from the source until
# it is full or the source would block, then drained to the sink; nothing
# is read while it still holds bytes that do not fit, so a slow sink stops
# the reads on the other side (backpressure) and memory stays bounded.

cdef enum:
    PUMP_OSERROR = -1   # errno in *err_no
    PUMP_TLSERROR = -2  # details in OpenSSL's (thread-local) error queue


cdef struct Pipe:
    char* buf
    size_t size
    size_t start      # buf[start:end] was read and is not yet written
    size_t end
    bint eof          # the source finished: flush, then forward the EOF
    bint done         # the EOF was forwarded
    bint hup          # the source reported a hang-up: no short-read shortcut (see below)
    unsigned long long moved


cdef inline bint _would_block(int e) noexcept nogil:
    return e == EAGAIN or e == EWOULDBLOCK


cdef int _read_tls(SSL* ssl, Pipe* p, int* err_no) noexcept nogil:
    """One SSL_read into the free tail of p: 0 (got bytes or EOF) or a status."""
    cdef size_t got = 0
    cdef int e, saved
    if SSL_read_ex(ssl, p.buf + p.end, p.size - p.end, &got) == 1:
        p.end += got
        return 0
    saved = errno
    e = SSL_get_error(ssl, 0)
    if e == SSL_ERROR_WANT_READ:
        return S_WANT_TLS_READ
    if e == SSL_ERROR_WANT_WRITE:
        return S_WANT_TLS_WRITE
    if e == SSL_ERROR_ZERO_RETURN:
        p.eof = True
        return 0
    if e == SSL_ERROR_SYSCALL and ERR_peek_error() == 0:
        if saved == 0:
            p.eof = True  # closed without close_notify: still the end of the stream
            return 0
        err_no[0] = saved
        return PUMP_OSERROR
    if e == SSL_ERROR_SSL and ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING:
        ERR_clear_error()
        p.eof = True
        return 0
    return PUMP_TLSERROR


cdef int _pump_tls_to_plain(SSL* ssl, int fd, Pipe* p, int* err_no) noexcept nogil:
    cdef int want = 0
    cdef ssize_t n
    while True:
        if p.start == p.end:
            p.start = p.end = 0
        if not p.eof and want == 0 and p.end < p.size:
            want = _read_tls(ssl, p, err_no)
            if want < 0:
                return want
            continue
        if p.start < p.end:
            n = send(fd, p.buf + p.start, p.end - p.start, MSG_NOSIGNAL)
            if n < 0:
                if errno == EINTR:
                    continue
                if _would_block(errno):
                    return S_WANT_PLAIN_WRITE
                err_no[0] = errno
                return PUMP_OSERROR
            p.start += <size_t>n
            p.moved += <size_t>n
            continue
        if p.eof:
            if not p.done:
                shutdown(fd, SHUT_WR)  # fails only if the app already closed: nothing to tell it
                p.done = True
            return S_EOF
        return want


cdef int _write_tls(SSL* ssl, Pipe* p, int* err_no) noexcept nogil:
    """One SSL_write of buf[start:end]: 0 (progress) or a status."""
    cdef size_t written = 0
    cdef int e, saved
    if SSL_write_ex(ssl, p.buf + p.start, p.end - p.start, &written) == 1:
        p.start += written
        p.moved += written
        return 0
    saved = errno
    e = SSL_get_error(ssl, 0)
    if e == SSL_ERROR_WANT_WRITE:
        return S_WANT_TLS_WRITE
    if e == SSL_ERROR_WANT_READ:
        return S_WANT_TLS_READ
    if e == SSL_ERROR_SYSCALL and ERR_peek_error() == 0:
        err_no[0] = saved if saved != 0 else EPIPE
        return PUMP_OSERROR
    return PUMP_TLSERROR


cdef int _send_close_notify(SSL* ssl, int* err_no) noexcept nogil:
    cdef int r = SSL_shutdown(ssl), e, saved = errno
    if r >= 0:
        return 0
    e = SSL_get_error(ssl, r)
    if e == SSL_ERROR_WANT_WRITE or e == SSL_ERROR_WANT_READ:
        return S_WANT_TLS_WRITE
    if e == SSL_ERROR_SYSCALL and ERR_peek_error() == 0:
        err_no[0] = saved if saved != 0 else EPIPE
        return PUMP_OSERROR
    return PUMP_TLSERROR


cdef int _pump_plain_to_tls(SSL* ssl, int fd, Pipe* p, int* err_no) noexcept nogil:
    cdef int want = 0, r
    cdef ssize_t n
    cdef size_t room
    while True:
        if p.start == p.end:
            p.start = p.end = 0
        if not p.eof and want == 0 and p.end < p.size:
            room = p.size - p.end
            n = recv(fd, p.buf + p.end, room, 0)
            if n > 0:
                p.end += <size_t>n
                if <size_t>n < room and not p.hup:
                    # A short read of a stream socket emptied it (epoll(7)):
                    # skip the recv that would only say EAGAIN (haproxy does
                    # the same). Not after a hang-up: the EOF behind the
                    # bytes brings no new readiness edge.
                    want = S_WANT_PLAIN_READ
            elif n == 0:
                p.eof = True
            elif errno == EINTR:
                pass
            elif _would_block(errno):
                want = S_WANT_PLAIN_READ
            else:
                err_no[0] = errno
                return PUMP_OSERROR
            continue
        if p.start < p.end:
            r = _write_tls(ssl, p, err_no)
            if r != 0:
                return r
            continue
        if p.eof:
            if not p.done:
                r = _send_close_notify(ssl, err_no)
                if r != 0:
                    return r
                p.done = True
            return S_EOF
        return want


@cython.final
cdef class Relay:
    """Moves bytes between a TlsConnection and a plaintext fd, one bounded buffer per direction.

    Not thread-safe: call it from one thread (the runtime's), like the
    TlsConnection it drives.
    """

    cdef TlsConnection conn
    cdef int fd
    cdef Pipe down  # TLS -> plain
    cdef Pipe up    # plain -> TLS

    def __cinit__(self, TlsConnection conn not None, int plain_fd, Py_ssize_t buffer_size=65536):
        if buffer_size <= 0:
            raise ValueError("buffer_size must be positive")
        self.conn = conn
        self.fd = plain_fd
        self.down.buf = <char*>malloc(buffer_size)
        self.up.buf = <char*>malloc(buffer_size)
        if self.down.buf == NULL or self.up.buf == NULL:
            raise MemoryError()
        self.down.size = self.up.size = <size_t>buffer_size

    def __dealloc__(self):
        free(self.down.buf)
        free(self.up.buf)

    @property
    def bytes_tls_to_plain(self):
        return self.down.moved

    @property
    def bytes_plain_to_tls(self):
        return self.up.moved

    def tls_to_plain(self):
        """Pump TLS -> plain until something would block; return a RelayStatus."""
        cdef SSL* ssl = self.conn.live()
        cdef int status, err_no = 0
        ERR_clear_error()
        with nogil:
            status = _pump_tls_to_plain(ssl, self.fd, &self.down, &err_no)
        if status < 0:
            raise _pump_error(status, err_no)
        return status

    def plain_to_tls(self):
        """Pump plain -> TLS until something would block; return a RelayStatus."""
        cdef SSL* ssl = self.conn.live()
        cdef int status, err_no = 0
        ERR_clear_error()
        with nogil:
            status = _pump_plain_to_tls(ssl, self.fd, &self.up, &err_no)
        if status < 0:
            raise _pump_error(status, err_no)
        return status


cdef object _pump_error(int status, int err_no):
    if status == PUMP_OSERROR:
        return OSError(err_no, os.strerror(err_no))
    detail = _ssl_error_detail() or "TLS error"
    return TlsError(classify_tls_error(detail), detail)
