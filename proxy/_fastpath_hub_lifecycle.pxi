# A slot's way through the relay hub's lists (live, finished, zombies), the
# buffer pool, notices, and the timer sweep (idle, lifetime, re-authentication).
# Module functions over the hub rather than its methods only to keep each file
# to one job; every one runs without the GIL and with the hub's lock held, by
# the relay thread or by the Python-side method that called it (cancel(),
# rearm(): see the rules at the top of _fastpath_hub.pxi).
#
# Buffers: a direction holds a buffer only while it has bytes in flight;
# an emptied buffer goes back to a small pool, so an idle connection holds
# none (with SSL_MODE_RELEASE_BUFFERS, neither does its SSL).
#
# Timers: idle timeout and the lifetime deadline (the earlier of the peer
# certificate's NotAfter and max_connection_lifetime) are checked by a
# sweep every _SWEEP_MS while any live slot has one.


cdef void _hub_take_incoming(RelayHub hub, double now) noexcept nogil:
    cdef Slot* s = hub.incoming
    cdef Slot* nxt
    cdef epoll_event ev
    cdef int err
    hub.incoming = NULL
    while s != NULL:
        nxt = s.next
        if s.outcome == O_CANCELLED:
            free(s)  # cancelled before the loop saw it: never registered, no buffers
            s = nxt
            continue
        s.prev = NULL
        s.next = hub.live
        if hub.live != NULL:
            hub.live.prev = s
        hub.live = s
        ev.events = _EDGE_EVENTS
        ev.data.u64 = <uint64_t><uintptr_t>s
        if epoll_ctl(hub.epfd, EPOLL_CTL_ADD, s.tls_fd, &ev) != 0:
            _hub_fail_os(hub, s, errno)
            s = nxt
            continue
        ev.data.u64 = (<uint64_t><uintptr_t>s) | _SIDE_PLAIN
        if epoll_ctl(hub.epfd, EPOLL_CTL_ADD, s.plain_fd, &ev) != 0:
            err = errno  # before the DEL below can overwrite it
            epoll_ctl(hub.epfd, EPOLL_CTL_DEL, s.tls_fd, NULL)
            _hub_fail_os(hub, s, err)
            s = nxt
            continue
        s.registered = True
        if s.idle_timeout > 0 or s.deadline > 0:
            if hub.timed_count == 0:
                hub.next_sweep = now + _SWEEP_MS / 1000.0
            hub.timed_count += 1
        # Bytes may already wait in the SSL's buffer (read ahead with the
        # handshake's last flight), and edges that came before the
        # registration are reported by EPOLL_CTL_ADD, but run both now.
        hub._pump(s, True)
        if s.outcome == O_RUNNING:
            hub._pump(s, False)
        s = nxt


cdef void _hub_fail_os(RelayHub hub, Slot* s, int err_no) noexcept nogil:
    s.err_no = err_no
    _hub_finish(hub, s, O_FAILED)


cdef void _hub_finish(RelayHub hub, Slot* s, int outcome) noexcept nogil:
    """Out of the loop and onto the finished list (the lock is held)."""
    s.outcome = outcome
    hub.live_count -= 1
    _hub_drop(hub, s)
    s.next = hub.finished_head
    hub.finished_head = s


cdef void _hub_drop(RelayHub hub, Slot* s) noexcept nogil:
    """Unregister and unlink a live slot and give back its buffers."""
    _hub_forget_notice(hub, s)
    if s.registered:
        _hub_unregister(hub, s)
    _hub_unlink_live(hub, s)
    if s.down.buf != NULL:
        _hub_release(hub, s.down.buf, s.buffer_size)
        s.down.buf = NULL
    if s.up.buf != NULL:
        _hub_release(hub, s.up.buf, s.buffer_size)
        s.up.buf = NULL


cdef void _hub_unregister(RelayHub hub, Slot* s) noexcept nogil:
    epoll_ctl(hub.epfd, EPOLL_CTL_DEL, s.tls_fd, NULL)
    epoll_ctl(hub.epfd, EPOLL_CTL_DEL, s.plain_fd, NULL)
    s.registered = False
    if s.idle_timeout > 0 or s.deadline > 0:
        hub.timed_count -= 1


cdef void _hub_unlink_live(RelayHub hub, Slot* s) noexcept nogil:
    if s.prev != NULL:
        s.prev.next = s.next
    elif hub.live == s:
        hub.live = s.next
    if s.next != NULL:
        s.next.prev = s.prev
    s.prev = s.next = NULL


cdef void _hub_forget_notice(RelayHub hub, Slot* s) noexcept nogil:
    if s.notice != N_NONE:
        hub.notice_count -= 1
        s.notice = N_NONE


cdef void _hub_notify(RelayHub hub, Slot* s, int notice) noexcept nogil:
    if s.notice == N_NONE:
        hub.notice_count += 1
    s.notice = notice


cdef void _hub_free_zombies(RelayHub hub) noexcept nogil:
    cdef Slot* s = hub.zombies
    cdef Slot* nxt
    hub.zombies = NULL
    while s != NULL:
        nxt = s.next
        if s.down.buf != NULL:
            _hub_release(hub, s.down.buf, s.buffer_size)
        if s.up.buf != NULL:
            _hub_release(hub, s.up.buf, s.buffer_size)
        free(s)
        s = nxt


cdef char* _hub_buffer(RelayHub hub, size_t size) noexcept nogil:
    if size == hub.buffer_size and hub.pool_len > 0:
        hub.pool_len -= 1
        return hub.pool[hub.pool_len]
    return <char*>malloc(size)


cdef void _hub_release(RelayHub hub, char* buf, size_t size) noexcept nogil:
    if size == hub.buffer_size and hub.pool_len < _POOL_MAX:
        hub.pool[hub.pool_len] = buf
        hub.pool_len += 1
    else:
        free(buf)


cdef void _hub_sweep(RelayHub hub, double now) noexcept nogil:
    cdef Slot* s = hub.live
    cdef Slot* nxt
    cdef unsigned long long moved
    while s != NULL:
        nxt = s.next
        if s.reauth_at > 0 and now >= s.reauth_at and s.up_wait != S_WANT_TLS_WRITE \
                and s.down_wait != S_WANT_TLS_WRITE and s.outcome == O_RUNNING:
            _hub_start_reauth(hub, s)
        if s.outcome != O_RUNNING:
            pass
        elif s.deadline > 0 and now >= s.deadline:
            _hub_finish(hub, s, O_LIFETIME)
        elif s.idle_timeout > 0:
            moved = s.down.moved + s.up.moved
            if moved != s.seen_moved:
                s.seen_moved = moved
                s.idle_since = now
            elif now - s.idle_since >= s.idle_timeout:
                _hub_finish(hub, s, O_IDLE)
        s = nxt


cdef void _hub_start_reauth(RelayHub hub, Slot* s) noexcept nogil:
    """The due certificate request (the lock is held; no TLS write is pending)."""
    cdef int r
    s.reauth_at = 0
    r = _reauth_request(s.ssl, s.reauth)
    if r == -1:
        _hub_notify(hub, s, N_CANNOT_REAUTH)
    elif r == REAUTH_ERROR:
        _collect_error_detail(s.detail, _DETAIL_SIZE)
        s.tls_failure = True
        _hub_finish(hub, s, O_FAILED)
    else:
        s.reauth_flush = r == S_WANT_TLS_WRITE


cdef void _hub_flush_reauth(RelayHub hub, Slot* s) noexcept nogil:
    cdef int r = _reauth_flush(s.ssl)
    if r == REAUTH_ERROR:
        _collect_error_detail(s.detail, _DETAIL_SIZE)
        s.tls_failure = True
        _hub_finish(hub, s, O_FAILED)
    else:
        s.reauth_flush = r == S_WANT_TLS_WRITE
