"""Session resumption: only within the same contexts, and a resumed peer is still identified and checked."""

from __future__ import annotations

import pytest


def _first_connection(engine, harness, server_ctx, client_ctx, key="upstream-a", clean=True):
    """A full handshake whose client reads the server's TLS 1.3 tickets, then closes (cleanly: close_notify).

    The server always closes cleanly, as the sidecar does: OpenSSL drops
    the session of a server connection freed without close_notify.
    """
    est = harness.connect(server_ctx, client_ctx, key)
    assert not est.client.resumed
    plain, _ = harness.pair()
    assert engine.Relay(est.client, plain.fileno()).tls_to_plain() == engine.WANT_TLS_READ  # tickets consumed
    if clean:
        assert est.client.shutdown() == engine.DONE
    assert est.server.shutdown() == engine.DONE
    est.client.close()
    est.server.close()
    return est


@pytest.fixture
def server_engine(engine):
    """The engine of the resuming server: the compiled one, also under the reference engine's client.

    The reference engine's server keeps no sessions (issue 11.1: its
    bindings cannot take a refused peer's session out of OpenSSL's cache),
    so the reference client's resumption is tested against the compiled server.
    """
    if engine.NAME == "fastpath":
        return engine
    try:
        from proxy import _fastpath
    except ImportError:
        pytest.skip("resumption needs the compiled engine's server")
    return _fastpath


@pytest.fixture
def contexts(engine, server_engine, test_pki, server_leaf, client_leaf):
    return (server_engine.ServerContext(test_pki.material(server_leaf)),
            engine.ClientContext(test_pki.material(client_leaf)))


def test_same_client_context_resumes_and_still_reports_the_peer(engine, harness, contexts, server_leaf, client_leaf):
    server_ctx, client_ctx = contexts
    _first_connection(engine, harness, server_ctx, client_ctx)
    est = harness.connect(server_ctx, client_ctx, "upstream-a")
    assert est.client.resumed and est.server.resumed
    assert est.client.peer_spiffe_id == "spiffe://example.org/server"
    assert est.server.peer_spiffe_id == "spiffe://example.org/client"
    assert est.client.peer_not_after == pytest.approx(server_leaf.cert.not_valid_after_utc.timestamp())
    assert est.server.peer_not_after == pytest.approx(client_leaf.cert.not_valid_after_utc.timestamp())


def test_session_is_only_offered_under_its_own_key(engine, harness, contexts):
    server_ctx, client_ctx = contexts
    _first_connection(engine, harness, server_ctx, client_ctx, key="upstream-a")
    est = harness.connect(server_ctx, client_ctx, "upstream-b")
    assert not est.client.resumed
    est = harness.connect(server_ctx, client_ctx)  # no key: never resumes
    assert not est.client.resumed


def test_new_client_context_does_not_resume(engine, harness, contexts, test_pki, client_leaf):
    server_ctx, client_ctx = contexts
    _first_connection(engine, harness, server_ctx, client_ctx)
    rotated = engine.ClientContext(test_pki.material(client_leaf, generation=2))
    est = harness.connect(server_ctx, rotated, "upstream-a")
    assert not est.client.resumed and not est.server.resumed


def test_new_server_context_refuses_old_tickets(engine, server_engine, harness, contexts, test_pki, server_leaf):
    server_ctx, client_ctx = contexts
    _first_connection(engine, harness, server_ctx, client_ctx)
    rotated = server_engine.ServerContext(test_pki.material(server_leaf, generation=2))
    est = harness.connect(rotated, client_ctx, "upstream-a")
    assert not est.client.resumed and not est.server.resumed
    assert est.server.peer_spiffe_id == "spiffe://example.org/client"


def test_connection_closed_without_close_notify_leaves_no_session(engine, harness, contexts):
    """OpenSSL retires the session of an aborted connection (a truncation could hide an attack)."""
    server_ctx, client_ctx = contexts
    _first_connection(engine, harness, server_ctx, client_ctx, clean=False)
    est = harness.connect(server_ctx, client_ctx, "upstream-a")
    assert not est.client.resumed


def test_resumption_refuses_a_peer_whose_certificate_expired_since(engine, server_engine, harness, test_pki,
                                                                   server_leaf):
    """A ticket outlives the certificate it was made with: the resumed check still rejects the expired peer."""
    import datetime as dt
    import time

    from support import pki

    from proxy.errors import VerificationError, VerifyFailure

    short = pki.make_svid(test_pki.root, "/short-lived", not_before=pki._now() - dt.timedelta(seconds=1),
                          lifetime=dt.timedelta(seconds=3))
    server_ctx = server_engine.ServerContext(test_pki.material(server_leaf))
    client_ctx = engine.ClientContext(test_pki.material(short))
    _first_connection(engine, harness, server_ctx, client_ctx)
    time.sleep(max(0.0, short.cert.not_valid_after_utc.timestamp() - time.time() + 1.1))
    s_sock, c_sock = harness.pair()
    server, client = server_ctx.new_connection(s_sock.fileno()), client_ctx.new_connection(c_sock.fileno(), "upstream-a")
    errors = harness.handshake(server, s_sock, client, c_sock)
    assert isinstance(errors.get("server"), VerificationError), errors
    assert errors["server"].reason is VerifyFailure.EXPIRED
    assert server.resumed, "the refusal must come from the resumed-session check, not a full handshake"


def test_a_server_connection_dropped_without_close_notify_leaves_nothing_to_resume(engine, harness, contexts):
    # Server sessions live in the server context's cache (stateful tickets);
    # OpenSSL removes the session of a connection freed without close_notify,
    # so an aborted connection (a reset, a crash mid-stream) cannot be resumed.
    server_ctx, client_ctx = contexts
    est = harness.connect(server_ctx, client_ctx, "upstream-a")
    plain, _ = harness.pair()
    assert engine.Relay(est.client, plain.fileno()).tls_to_plain() == engine.WANT_TLS_READ  # ticket read
    est.client.close()
    est.server.close()  # no shutdown()
    again = harness.connect(server_ctx, client_ctx, "upstream-a")
    assert not again.server.resumed and not again.client.resumed


def test_each_session_is_offered_once_and_concurrent_connections_each_get_their_own(engine, harness, contexts):
    # Server sessions are single-use (stateful TLS 1.3 tickets); a client that
    # offered one session to every connection would resume only the first.
    server_ctx, client_ctx = contexts
    first = [harness.connect(server_ctx, client_ctx, "upstream-a") for _ in range(3)]  # all full handshakes
    for est in first:  # each reads its ticket and closes cleanly: three unused sessions
        plain, _ = harness.pair()
        assert engine.Relay(est.client, plain.fileno()).tls_to_plain() == engine.WANT_TLS_READ
        assert est.client.shutdown() == engine.DONE and est.server.shutdown() == engine.DONE
        est.client.close()
        est.server.close()
    assert not any(est.client.resumed for est in first)
    concurrent = [harness.connect(server_ctx, client_ctx, "upstream-a") for _ in range(4)]
    assert [e.client.resumed for e in concurrent] == [True, True, True, False]
    assert [e.server.resumed for e in concurrent] == [True, True, True, False]


def test_reference_engine_server_keeps_no_session(harness, test_pki, server_leaf, client_leaf):
    """Issue 11.1: the reference engine's server never resumes, so it holds no peer's chain after a connection."""
    from proxy.tls import engine_py

    server_ctx = engine_py.ServerContext(test_pki.material(server_leaf))
    client_ctx = engine_py.ClientContext(test_pki.material(client_leaf))
    _first_connection(engine_py, harness, server_ctx, client_ctx)
    assert client_ctx.cached_sessions("upstream-a") >= 1  # the client kept what it was given
    est = harness.connect(server_ctx, client_ctx, "upstream-a")
    assert est.client.session_offered and not est.client.resumed and not est.server.resumed
