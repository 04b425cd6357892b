# The relay thread's slot (one relayed connection), the handle Python holds
# for it, and the epoll/eventfd declarations. Included by _fastpath.pyx
# before _fastpath_hub.pxi; the rules for who touches a slot when are at
# the top of that file.

from cpython.ref cimport PyObject, Py_INCREF, Py_DECREF
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        void* ptr
        int fd
        uint32_t u32
        uint64_t u64
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event* event)
    int epoll_wait(int epfd, epoll_event* events, int maxevents, int timeout)
    int EPOLL_CLOEXEC
    int EPOLL_CTL_ADD
    int EPOLL_CTL_DEL
    uint32_t EPOLLIN
    uint32_t EPOLLOUT
    uint32_t EPOLLRDHUP
    uint32_t EPOLLERR
    uint32_t EPOLLHUP
    uint32_t EPOLLET

cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int initval, int flags)
    int EFD_NONBLOCK
    int EFD_CLOEXEC

cdef extern from "<unistd.h>" nogil:
    ssize_t c_read "read"(int fd, void* buf, size_t n)
    ssize_t c_write "write"(int fd, const void* buf, size_t n)
    int c_close "close"(int fd)

cdef extern from "<stdint.h>" nogil:
    ctypedef unsigned long uintptr_t

# OffloadedRelay.outcome values (module constants of the same names).
cdef enum:
    O_RUNNING = 0
    O_FINISHED = 1   # both directions reached EOF
    O_FAILED = 2     # a socket or TLS error; see .error
    O_IDLE = 3       # no byte moved for idle_timeout
    O_LIFETIME = 4   # the lifetime deadline passed
    O_CANCELLED = 5  # cancel() took it back

RELAY_RUNNING = O_RUNNING
RELAY_FINISHED = O_FINISHED
RELAY_FAILED = O_FAILED
RELAY_IDLE = O_IDLE
RELAY_LIFETIME = O_LIFETIME
RELAY_CANCELLED = O_CANCELLED

# OffloadedRelay.notice values: news about a connection that is still relaying.
cdef enum:
    N_NONE = 0
    N_REAUTHENTICATED = 1  # the peer answered the certificate request in full (and its chain verified)
    N_CANNOT_REAUTH = 2    # the peer cannot be asked (no post_handshake_auth): it ends at its deadline

NOTICE_NONE = N_NONE
NOTICE_REAUTHENTICATED = N_REAUTHENTICATED
NOTICE_CANNOT_REAUTH = N_CANNOT_REAUTH

cdef enum:
    _SIDE_TLS = 0
    _SIDE_PLAIN = 1
    _WAKE_TAG = 1        # epoll data of the wake-up eventfd (slots are aligned: never 1)
    _MAX_EVENTS = 256
    _SWEEP_MS = 50
    _POOL_MAX = 32
    _DETAIL_SIZE = 256

cdef uint32_t _EDGE_EVENTS = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET


cdef struct Slot:
    SSL* ssl
    int tls_fd
    int plain_fd
    size_t buffer_size
    Pipe down           # TLS -> plain
    Pipe up             # plain -> TLS
    int down_wait       # RelayStatus the direction waits for; 0: run it; S_EOF: done
    int up_wait
    double idle_timeout  # seconds, 0: none
    double idle_since    # monotonic time of the sweep that last saw bytes move
    unsigned long long seen_moved
    double deadline      # monotonic, 0: none
    int outcome
    int err_no           # O_FAILED on a socket error
    bint tls_failure     # O_FAILED on a TLS error (detail holds OpenSSL's reasons)
    char detail[_DETAIL_SIZE]
    bint registered
    _Reauth* reauth      # the TlsConnection's re-authentication state (kept alive by the handle)
    double reauth_at     # monotonic, 0: none (or already requested)
    bint reauth_flush    # the certificate request still waits for the TLS socket to drain
    int notice           # N_* waiting for noticed(); N_NONE: nothing
    PyObject* handle     # the OffloadedRelay (a reference); NULL once Python took it back
    Slot* prev
    Slot* next


cdef inline double _monotonic() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


@cython.final
cdef class OffloadedRelay:
    """A connection handed to a RelayHub; its outcome once the hub hands it back.

    ``outcome`` is RELAY_RUNNING until ``RelayHub.finished()`` returns this
    handle or ``RelayHub.cancel()`` took it back. Byte counts are final then.
    """

    cdef Slot* slot
    cdef TlsConnection conn  # keeps the SSL* alive while the loop uses it
    cdef readonly int outcome
    cdef readonly unsigned long long bytes_tls_to_plain
    cdef readonly unsigned long long bytes_plain_to_tls
    cdef readonly bint tls_to_plain_done
    cdef readonly bint plain_to_tls_done
    cdef readonly object error
    cdef readonly int notice   # N_*: set by RelayHub.noticed() while the relay goes on; Python resets it
    cdef public object waiter  # whatever the runtime wakes when it ends

    def take_notice(self):
        """The notice noticed() delivered (NOTICE_*), cleared."""
        n = self.notice
        self.notice = N_NONE
        return n

    cdef void take_result(self, Slot* s):
        """Copy the slot's final state (GIL held, hub lock held or slot already out of the loop)."""
        self.outcome = s.outcome
        self.bytes_tls_to_plain = s.down.moved
        self.bytes_plain_to_tls = s.up.moved
        self.tls_to_plain_done = s.down_wait == S_EOF
        self.plain_to_tls_done = s.up_wait == S_EOF
        self.slot = NULL


cdef inline double _to_monotonic(double unix_time, double now_mono) noexcept nogil:
    """A Unix time as this loop's monotonic time (0 stays 0: none; past stays past)."""
    cdef double t
    if unix_time <= 0:
        return 0.0
    t = now_mono + (unix_time - <double>time(NULL))
    return t if t > 0 else 1e-9


cdef inline bint _waits_for(int wait, int side, bint readable, bint writable) noexcept nogil:
    """Whether a direction waiting for ``wait`` should run on this event."""
    if wait == 0:
        return True
    if side == _SIDE_TLS:
        return (wait == S_WANT_TLS_READ and readable) or (wait == S_WANT_TLS_WRITE and writable)
    return (wait == S_WANT_PLAIN_READ and readable) or (wait == S_WANT_PLAIN_WRITE and writable)
