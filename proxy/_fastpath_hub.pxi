# The relay thread: established connections relay here, in one GIL-free
# epoll loop, instead of in the event loop. Included by _fastpath.pyx.
#
# Why: on an established connection the work per request is a few
# syscalls and a few microseconds of AES; driving it from Python (a task
# per direction, a readiness wait per event, a wake-up through the event
# loop) cost 3-4x what haproxy spends per request and put the event loop's
# scheduling in every request's latency. Here a connection costs what it
# costs in a C proxy: epoll_wait, the pumps of _fastpath_relay.pxi, and
# nothing in Python until it ends. The event loop keeps what needs Python
# (accept, handshake, policy, connect, the record) and hands over the two
# fds and the SSL* once the connection is authorized and connected.
#
# Threads and ownership. RelayHub.run() is the loop; it runs on a thread of
# its own and never takes the GIL. Every other method is called from the
# event loop's thread, with the GIL. They meet under one mutex, which the
# loop holds while it handles a batch of events and releases while it
# waits in epoll_wait; Python-side callers release the GIL before taking
# it. A Slot (one relayed connection) is in exactly one list:
#   incoming  handed over by add(), not yet registered (the loop registers
#             it and runs both pumps once: bytes may already wait in the
#             SSL's read-ahead buffer);
#   live      registered with epoll, pumped on readiness;
#   finished  ended (both directions done, an error, a deadline); the loop
#             has unregistered it and wrote the done eventfd; finished()
#             hands it back to Python and frees it;
#   zombies   cancelled by Python (cancel()) while live: unregistered at
#             once, freed by the loop after the batch it may still appear in.
# The SSL* stays owned by its TlsConnection, which the OffloadedRelay
# handle keeps alive; the loop touches it only while the slot is live, and
# Python touches it only once the slot left the loop (finished/cancelled).
#
# Events are edge-triggered (EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET, one
# registration per fd, no epoll_ctl per event). Each direction remembers
# what it waits for (the RelayStatus its pump returned); an event runs the
# directions waiting for it. A pump always runs until something returned
# EAGAIN (or a short read proved the socket empty), so the next edge comes.
#
# Re-authentication (issue 11.2, _fastpath_reauth.pxi): a slot may carry
# reauth_at. The sweep that finds it due, at a moment when neither
# direction waits to write TLS, sends the post-handshake certificate
# request; the ordinary pumps read the answer. A complete answer (or a peer
# that cannot be asked) is a notice: the slot stays live and relaying, its
# handle's ``notice`` is set and the done eventfd fires; Python re-authorizes
# and calls rearm() with the new deadlines, or cancel() to close. A slot
# without reauth_at costs nothing more than before: one compare per sweep.
#
# The slot and its handle: _fastpath_hub_slot.pxi. A slot's way through the
# lists, the buffer pool and the timer sweep: _fastpath_hub_lifecycle.pxi.


@cython.final
cdef class RelayHub:
    """The GIL-free relay loop for established connections (see the top of _fastpath_hub.pxi)."""

    cdef int epfd
    cdef int wake_fd     # Python -> loop: something was added, or stop
    cdef int done_fd     # loop -> Python: something finished
    cdef pthread_mutex_t lock
    cdef bint lock_ready
    cdef bint stopping
    cdef bint running
    cdef size_t buffer_size
    cdef Slot* incoming
    cdef Slot* live
    cdef Slot* finished_head
    cdef Slot* zombies
    cdef Py_ssize_t live_count
    cdef Py_ssize_t timed_count
    cdef Py_ssize_t notice_count
    cdef char* pool[_POOL_MAX]
    cdef int pool_len
    cdef double next_sweep

    def __cinit__(self, Py_ssize_t buffer_size=65536):
        cdef epoll_event ev
        if buffer_size <= 0:
            raise ValueError("buffer_size must be positive")
        self.buffer_size = <size_t>buffer_size
        self.epfd = self.wake_fd = self.done_fd = -1
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise OSError(errno, os.strerror(errno))
        self.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        self.done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if self.wake_fd < 0 or self.done_fd < 0:
            raise OSError(errno, os.strerror(errno))
        ev.events = EPOLLIN
        ev.data.u64 = _WAKE_TAG
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, self.wake_fd, &ev) != 0:
            raise OSError(errno, os.strerror(errno))
        pthread_mutex_init(&self.lock, NULL)
        self.lock_ready = True

    def __dealloc__(self):
        # Only after run() returned (the thread holds a reference while it runs).
        cdef OffloadedRelay h
        cdef Slot* lists[4]
        cdef Slot* s
        cdef Slot* nxt
        cdef int i
        lists[0] = self.incoming
        lists[1] = self.live
        lists[2] = self.finished_head
        lists[3] = self.zombies
        for i in range(4):
            s = lists[i]
            while s != NULL:
                nxt = s.next
                if s.handle != NULL:
                    h = <OffloadedRelay><object>s.handle
                    h.take_result(s)
                    s.handle = NULL
                    Py_DECREF(h)
                free(s.down.buf)
                free(s.up.buf)
                free(s)
                s = nxt
        for i in range(self.pool_len):
            free(self.pool[i])
        for fd in (self.epfd, self.wake_fd, self.done_fd):
            if fd >= 0:
                c_close(fd)
        if self.lock_ready:
            pthread_mutex_destroy(&self.lock)

    # --- the Python side (event loop thread, GIL held) --------------------------

    def fileno(self):
        """An fd that becomes readable when finished() has something to return."""
        return self.done_fd

    @property
    def active(self):
        """Connections in the loop (handed over and not yet finished)."""
        return self.live_count

    def add(self, TlsConnection conn not None, int tls_fd, int plain_fd, double idle_timeout=0.0,
            double lifetime_deadline=0.0, Py_ssize_t buffer_size=0, double reauth_at=0.0):
        """Hand an established connection to the loop; returns its OffloadedRelay.

        ``lifetime_deadline`` and ``reauth_at`` are Unix time (0: none);
        ``idle_timeout`` in seconds (0: none); ``buffer_size`` 0 means the
        hub's. From here on the caller must not use ``conn`` until the relay
        is finished or cancelled (it may read its peer_* attributes after a
        notice).
        """
        cdef SSL* ssl = conn.live()
        cdef Slot* s = <Slot*>calloc(1, sizeof(Slot))
        cdef OffloadedRelay h
        cdef double now_mono = _monotonic()
        if s == NULL:
            raise MemoryError()
        h = OffloadedRelay.__new__(OffloadedRelay)
        h.conn = conn
        h.slot = s
        s.ssl = ssl
        s.tls_fd = tls_fd
        s.plain_fd = plain_fd
        s.buffer_size = <size_t>buffer_size if buffer_size > 0 else self.buffer_size
        s.down.size = s.up.size = s.buffer_size
        s.idle_timeout = idle_timeout if idle_timeout > 0 else 0.0
        s.idle_since = now_mono
        s.deadline = _to_monotonic(lifetime_deadline, now_mono)
        s.reauth = &conn.reauth
        s.reauth_at = _to_monotonic(reauth_at, now_mono)
        s.handle = <PyObject*>h
        Py_INCREF(h)  # the hub's reference, dropped when Python takes the slot back
        with nogil:
            pthread_mutex_lock(&self.lock)
            s.next = self.incoming
            self.incoming = s
            self.live_count += 1
            pthread_mutex_unlock(&self.lock)
            self._wake()
        return h

    def cancel(self, OffloadedRelay h not None):
        """Take a connection back from the loop now (a stop); a no-op once it finished.

        On return the loop no longer touches the connection; its byte
        counts are final and ``outcome`` is RELAY_CANCELLED (or what it
        ended with, if it ended first).
        """
        cdef Slot* s
        with nogil:
            pthread_mutex_lock(&self.lock)
        try:
            s = h.slot
            if s == NULL:
                return
            if s.outcome == O_RUNNING:
                s.outcome = O_CANCELLED
                self.live_count -= 1
                _hub_forget_notice(self, s)
                if s.registered:
                    _hub_unregister(self, s)
                    _hub_unlink_live(self, s)
                    s.next = self.zombies
                    self.zombies = s
                # else: still in incoming; the loop frees it when it gets there
            # else: finished, not yet collected; finished() frees it
            h.take_result(s)
            s.handle = NULL
            Py_DECREF(h)
        finally:
            pthread_mutex_unlock(&self.lock)

    def noticed(self):
        """Relays with news that still run (list of OffloadedRelay; see their ``notice``)."""
        cdef Slot* s
        cdef OffloadedRelay h
        out = []
        if self.notice_count == 0:  # unlocked peek: a notice set meanwhile also wrote the eventfd
            return out
        with nogil:
            pthread_mutex_lock(&self.lock)
        try:
            s = self.live
            while s != NULL and self.notice_count > 0:
                if s.notice != N_NONE and s.handle != NULL:
                    h = <OffloadedRelay><object>s.handle
                    h.notice = s.notice
                    s.notice = N_NONE
                    self.notice_count -= 1
                    out.append(h)
                s = s.next
        finally:
            pthread_mutex_unlock(&self.lock)
        return out

    def rearm(self, OffloadedRelay h not None, double lifetime_deadline=0.0, double reauth_at=0.0):
        """New timers for a relay that goes on after a notice (Unix times, 0: none); False if it ended."""
        cdef Slot* s
        cdef double now_mono = _monotonic()
        cdef bint timed_before
        with nogil:
            pthread_mutex_lock(&self.lock)
        try:
            s = h.slot
            if s == NULL or s.outcome != O_RUNNING:
                return False
            timed_before = s.idle_timeout > 0 or s.deadline > 0
            s.deadline = _to_monotonic(lifetime_deadline, now_mono)
            s.reauth_at = _to_monotonic(reauth_at, now_mono)
            if s.registered and timed_before != (s.idle_timeout > 0 or s.deadline > 0):
                self.timed_count += -1 if timed_before else 1
                if self.timed_count == 1:
                    self.next_sweep = now_mono + _SWEEP_MS / 1000.0
            return True
        finally:
            pthread_mutex_unlock(&self.lock)
            self._wake()  # the loop recomputes its epoll timeout

    def finished(self):
        """The relays that ended since the last call (list of OffloadedRelay), oldest first."""
        cdef uint64_t count
        cdef Slot* s
        cdef Slot* nxt
        cdef OffloadedRelay h
        c_read(self.done_fd, &count, sizeof(count))  # reset; EAGAIN when empty is fine
        with nogil:
            pthread_mutex_lock(&self.lock)
            s = self.finished_head
            self.finished_head = NULL
            pthread_mutex_unlock(&self.lock)
        done = []
        while s != NULL:
            nxt = s.next
            if s.handle != NULL:
                h = <OffloadedRelay><object>s.handle
                h.take_result(s)
                if s.outcome == O_FAILED:
                    if s.tls_failure:
                        detail = s.detail.decode("utf-8", "replace") or "TLS error"
                        h.error = TlsError(classify_tls_error(detail), detail)
                    else:
                        h.error = OSError(s.err_no, os.strerror(s.err_no))
                done.append(h)
                Py_DECREF(h)
            free(s)
            s = nxt
        done.reverse()
        return done

    def stop(self):
        """Make run() return (after the connections were finished or cancelled)."""
        with nogil:
            pthread_mutex_lock(&self.lock)
            self.stopping = True
            pthread_mutex_unlock(&self.lock)
            self._wake()

    def run(self):
        """The loop; blocks until stop(). Run it on a thread of its own."""
        if self.running:
            raise RuntimeError("RelayHub.run() is already running")
        self.running = True
        try:
            with nogil:
                self._loop()
        finally:
            self.running = False

    # --- the loop (relay thread, no GIL) ---------------------------------------

    cdef void _wake(self) noexcept nogil:
        cdef uint64_t one = 1
        c_write(self.wake_fd, &one, sizeof(one))

    cdef void _loop(self) noexcept nogil:
        cdef epoll_event events[_MAX_EVENTS]
        cdef int n, i, timeout
        cdef uint64_t tag, drained
        cdef double now = _monotonic()
        cdef bint notify
        while True:
            timeout = -1
            if self.timed_count > 0:
                # From the clock read after the last wait: at most one batch stale, and +1 rounds up.
                timeout = <int>((self.next_sweep - now) * 1000.0) + 1
                if timeout < 0:
                    timeout = 0
            n = epoll_wait(self.epfd, events, _MAX_EVENTS, timeout)
            now = _monotonic()
            pthread_mutex_lock(&self.lock)
            if self.stopping:
                pthread_mutex_unlock(&self.lock)
                return
            notify = self.finished_head == NULL and self.notice_count == 0
            for i in range(n if n > 0 else 0):
                tag = events[i].data.u64
                if tag == _WAKE_TAG:
                    c_read(self.wake_fd, &drained, sizeof(drained))
                    continue
                self._on_event(<Slot*><uintptr_t>(tag & ~(<uint64_t>1)), <int>(tag & 1), events[i].events)
            _hub_take_incoming(self, now)
            if self.timed_count > 0:
                if now >= self.next_sweep:
                    _hub_sweep(self, now)
                    self.next_sweep = now + _SWEEP_MS / 1000.0
            _hub_free_zombies(self)
            if notify and (self.finished_head != NULL or self.notice_count > 0):
                self._signal_done()
            pthread_mutex_unlock(&self.lock)

    cdef void _signal_done(self) noexcept nogil:
        cdef uint64_t one = 1
        c_write(self.done_fd, &one, sizeof(one))

    cdef void _on_event(self, Slot* s, int side, uint32_t flags) noexcept nogil:
        cdef bint readable = (flags & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0
        cdef bint writable = (flags & (EPOLLOUT | EPOLLHUP | EPOLLERR)) != 0
        if s.outcome != O_RUNNING:
            return  # ended earlier in this batch, or a zombie
        if side == _SIDE_PLAIN and (flags & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0:
            s.up.hup = True  # the app's FIN is queued: read to EAGAIN/EOF, never stop at a short read
        if s.reauth_flush and side == _SIDE_TLS and writable:
            _hub_flush_reauth(self, s)
        if s.outcome == O_RUNNING and _waits_for(s.down_wait, side, readable, writable):
            self._pump(s, True)
        if s.outcome == O_RUNNING and _waits_for(s.up_wait, side, readable, writable):
            self._pump(s, False)
        if s.outcome == O_RUNNING and s.reauth.state == REAUTH_DONE:
            s.reauth.state = REAUTH_IDLE
            _hub_notify(self, s, N_REAUTHENTICATED)

    cdef void _pump(self, Slot* s, bint down) noexcept nogil:
        """Run one direction until it would block; record what it waits for, or end the slot."""
        cdef Pipe* p = &s.down if down else &s.up
        cdef int status, err_no = 0
        if p.buf == NULL and not p.eof:
            p.buf = _hub_buffer(self, s.buffer_size)
            if p.buf == NULL:
                _hub_fail_os(self, s, ENOMEM)
                return
        ERR_clear_error()
        if down:
            status = _pump_tls_to_plain(s.ssl, s.plain_fd, p, &err_no)
        else:
            status = _pump_plain_to_tls(s.ssl, s.plain_fd, p, &err_no)
        if status == PUMP_OSERROR:
            _hub_fail_os(self, s, err_no)
            return
        if status == PUMP_TLSERROR:
            _collect_error_detail(s.detail, _DETAIL_SIZE)
            s.tls_failure = True
            _hub_finish(self, s, O_FAILED)
            return
        if p.start == p.end and p.buf != NULL:
            _hub_release(self, p.buf, s.buffer_size)  # nothing in flight: an idle direction holds no buffer
            p.buf = NULL
            p.start = p.end = 0
        if down:
            s.down_wait = status
        else:
            s.up_wait = status
        if s.down_wait == S_EOF and s.up_wait == S_EOF:
            _hub_finish(self, s, O_FINISHED)
