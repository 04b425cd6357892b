"""pyOpenSSL's exceptions as proxy.errors, for the reference engine's TLS objects and its relay.

One translation, so a failure reads the same whichever part of the engine
met it, and the same as the compiled engine's (OpenSSL's reason strings,
classified by the shared table in openssl_terms.py).
"""

from __future__ import annotations

import errno

from OpenSSL import SSL

from proxy.errors import HandshakeFailure, TlsError
from proxy.tls.openssl_terms import classify_tls_error


def ssl_detail(exc: SSL.Error) -> str:
    """OpenSSL's reason strings of a pyOpenSSL error, joined (the text both engines report)."""
    errors = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
    return "; ".join(str(e[-1]) for e in errors) or str(exc)


def tls_error(exc: SSL.Error) -> Exception:
    """Translate a pyOpenSSL exception into proxy.errors (or OSError)."""
    if isinstance(exc, SSL.SysCallError):
        code, msg = exc.args[0], exc.args[1] if len(exc.args) > 1 else ""
        if code in (-1, 0, errno.ECONNRESET, errno.EPIPE):
            return TlsError(HandshakeFailure.PEER_CLOSED, "peer closed the connection")
        return OSError(code, str(msg))
    if isinstance(exc, SSL.ZeroReturnError):
        return TlsError(HandshakeFailure.PEER_CLOSED, "peer sent close_notify")
    detail = ssl_detail(exc)
    return TlsError(classify_tls_error(detail), detail)
