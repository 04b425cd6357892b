# cython: language_level=3, boundscheck=False, wraparound=False
"""The compiled hot path: TLS on file descriptors, SPIFFE verification, the relay.

The contract is in proxy/tls/engine.py; proxy/tls/engine_py.py is the
readable twin. This module drives OpenSSL directly (the one it was built
against, see ``openssl_version()``), so nothing per record or per chunk
goes through Python: the runtime calls one method per readiness event and
the loops run in C without the GIL.

The code is split by flow, in the order a connection meets it:

- _fastpath_strength.pxi: the key and signature strength rules;
- _fastpath_spiffe.pxi: the strict SPIFFE ID parse, the leaf rules and
  path validation against one trust domain's store (and their twins);
- _fastpath_sessions.pxi: the server session cache's byte budget;
- _fastpath_reauth.pxi: TLS 1.3 post-handshake re-authentication;
- _fastpath_context.pxi: SSL_CTX from DER, client session resumption;
- _fastpath_tls.pxi: the handshake step with the SPIFFE check in the
  verify callback;
- _fastpath_relay.pxi: the bounded, half-close-aware relay pump;
- _fastpath_hub.pxi: the relay thread, a GIL-free epoll loop that runs
  those pumps for every established connection handed to it (its slot in
  _fastpath_hub_slot.pxi, the slot's lifecycle and timers in
  _fastpath_hub_lifecycle.pxi).

Only bytes, str and int cross the boundary (never pyOpenSSL or
cryptography objects: they carry another OpenSSL).
"""

cimport cython
from libc.errno cimport errno, EAGAIN, EINTR, ECONNRESET, ENOMEM, EPIPE
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport calloc, malloc, free
from libc.stdio cimport snprintf
from libc.string cimport memcmp, memcpy
from libc.time cimport time, time_t, tm

from proxy._openssl cimport *

import os

from proxy.tls import openssl_terms
from proxy.errors import (
    HandshakeFailure,
    InvalidSpiffeIdError,
    TlsError,
    VerificationError,
    VerifyFailure,
)

cdef extern from "<errno.h>" nogil:
    int EWOULDBLOCK

cdef extern from "<time.h>" nogil:
    time_t timegm(tm* t)

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    int pthread_mutex_init(pthread_mutex_t* m, const void* attr)
    int pthread_mutex_destroy(pthread_mutex_t* m)
    int pthread_mutex_lock(pthread_mutex_t* m)
    int pthread_mutex_unlock(pthread_mutex_t* m)

cdef extern from "<sys/types.h>" nogil:
    ctypedef long ssize_t

cdef extern from "<sys/socket.h>" nogil:
    ssize_t send(int fd, const void* buf, size_t n, int flags)
    ssize_t recv(int fd, void* buf, size_t n, int flags)
    int shutdown(int fd, int how)
    int MSG_NOSIGNAL
    int SHUT_WR

NAME = "fastpath"

# Handshake step results (proxy.tls.engine).
DONE = 0
WANT_READ = 1
WANT_WRITE = 2

# RelayStatus values, the same numbers as engine_py (parity-tested): a C
# enum for the GIL-free pumps, and the same values as Python ints.
cdef enum RelayStatus:
    S_WANT_TLS_READ = 1
    S_WANT_TLS_WRITE = 2
    S_WANT_PLAIN_READ = 3
    S_WANT_PLAIN_WRITE = 4
    S_EOF = 5

WANT_TLS_READ = S_WANT_TLS_READ
WANT_TLS_WRITE = S_WANT_TLS_WRITE
WANT_PLAIN_READ = S_WANT_PLAIN_READ
WANT_PLAIN_WRITE = S_WANT_PLAIN_WRITE
EOF = S_EOF

# TlsConnection.request_reauth(): the peer cannot be asked (TLS 1.2, or no post_handshake_auth offered).
CANNOT_REAUTH = 3


def openssl_version():
    """The OpenSSL this module runs on, e.g. "OpenSSL 3.0.19 27 Jan 2026"."""
    return OpenSSL_version(OPENSSL_VERSION).decode()


include "_fastpath_strength.pxi"
include "_fastpath_spiffe.pxi"
include "_fastpath_sessions.pxi"
include "_fastpath_reauth.pxi"
include "_fastpath_context.pxi"
include "_fastpath_tls.pxi"
include "_fastpath_http.pxi"
include "_fastpath_relay.pxi"
include "_fastpath_hub_slot.pxi"
include "_fastpath_hub.pxi"
include "_fastpath_hub_lifecycle.pxi"
