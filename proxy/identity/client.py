"""The Workload API client (trio): calls over our own gRPC-on-h2 layer.

One connection per call: the Workload API is local, a call opens a Unix
(or TCP) socket, runs one HTTP/2 connection with one stream on it, and
closes it when the call ends. No shared reader task, no per-stream
dispatch, and a broken call can never disturb another one; the cost is a
connect per call, which on a Unix socket is microseconds, and calls are
rare (one long-lived X.509 stream, the odd JWT fetch).

Streams are async generators. Close them deterministically::

    async with open_workload_api() as client:
        async with contextlib.aclosing(client.watch_x509_context()) as updates:
            async for context in updates:
                ...

Every failure surfaces as ``GrpcStatusError`` (a ``WorkloadApiError``):
the server's status, ``UNAVAILABLE`` when the socket cannot be reached or
breaks, ``DEADLINE_EXCEEDED`` when a unary call's timeout passes, and
``CANCELLED`` when the client is closed under a running call.
"""

from __future__ import annotations

import contextlib
from typing import AsyncGenerator, Iterator, Sequence, TypeVar

import trio
from google.protobuf.message import DecodeError, Message

from proxy.errors import InvalidSvidError
from proxy.identity import messages
from proxy.identity.address import WorkloadApiAddress, parse_address, resolve_address
from proxy.identity.snapshot import X509Context
from proxy.spiffe.bundle import JwtBundleSet, X509BundleSet
from proxy.spiffe.jwt_svid import JwtSvid
from proxy.workload_api import workload_pb2 as pb
from proxy.workload_api.grpc import GrpcStatusError, StatusCode
from proxy.workload_api.grpc_client import CallEnded, GrpcClientConnection, MessageReceived

_T = TypeVar("_T")
_M = TypeVar("_M", bound=Message)

_PATH = "/SpiffeWorkloadAPI/"
_READ_SIZE = 65536
#: Unary calls without an explicit timeout still end: the API is local.
DEFAULT_UNARY_TIMEOUT = 30.0


async def _connect(address: WorkloadApiAddress) -> trio.abc.Stream:
    try:
        if address.scheme == "unix":
            return await trio.open_unix_socket(address.path)
        return await trio.open_tcp_stream(address.host, address.port)
    except OSError as exc:
        raise GrpcStatusError(StatusCode.UNAVAILABLE,
                              f"cannot connect to the Workload API at {address}: {exc.strerror or exc}") from exc


class WorkloadApiClient:
    """A client of one Workload API endpoint.

    Args:
        address: an address string or parsed address; None resolves
            ``SPIFFE_ENDPOINT_SOCKET``.
        authority: the HTTP/2 ``:authority`` to send.

    Close it with ``aclose()`` (or ``async with``): running calls end with
    ``CANCELLED``. It holds no socket between calls.
    """

    def __init__(self, address: WorkloadApiAddress | str | None = None, *, authority: str = "localhost") -> None:
        if isinstance(address, WorkloadApiAddress):
            self.address = address
        elif address:
            self.address = parse_address(address)
        else:
            self.address = resolve_address()
        self._authority = authority
        self._streams: set[trio.abc.Stream] = set()
        self._closed = False

    async def __aenter__(self) -> WorkloadApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every open call's socket; idempotent."""
        self._closed = True
        for stream in list(self._streams):
            with trio.CancelScope(shield=True):
                await stream.aclose()

    # -- the RPCs -------------------------------------------------------------

    async def watch_x509_context(self) -> AsyncGenerator[X509Context, None]:
        """Stream X.509 contexts (FetchX509SVID), each the full state.

        An update with no SVID yields a context with empty ``svids``
        (redacted: stop using the SVID). Ends only by raising.

        Raises:
            GrpcStatusError: the stream's status, or UNAVAILABLE.
            SpiffeError: an update carries an invalid SVID or bundle.
        """
        async with contextlib.aclosing(self.watch_x509_responses()) as replies:
            async for response in replies:
                yield messages.x509_context(response)

    async def watch_x509_responses(self) -> AsyncGenerator[pb.X509SVIDResponse, None]:
        """Stream raw FetchX509SVID responses (a long-running source converts
        each itself, so that one invalid update does not end the stream).

        Raises:
            GrpcStatusError: the stream's status, or UNAVAILABLE.
        """
        async with contextlib.aclosing(self._stream("FetchX509SVID", pb.X509SVIDRequest(), pb.X509SVIDResponse,
                                                    "X.509-SVID")) as replies:
            async for response in replies:
                yield response

    async def fetch_x509_context(self, timeout: float = DEFAULT_UNARY_TIMEOUT) -> X509Context:
        """The first X.509 context of a FetchX509SVID stream.

        Raises:
            GrpcStatusError: as watch_x509_context, or DEADLINE_EXCEEDED.
        """
        return await _first_of(self.watch_x509_context(), timeout, "FetchX509SVID")

    async def watch_x509_bundles(self) -> AsyncGenerator[X509BundleSet, None]:
        """Stream X.509 bundle sets (FetchX509Bundles), each the full state.

        Raises:
            GrpcStatusError: the stream's status, or UNAVAILABLE.
            SpiffeError: a bundle is invalid.
        """
        async with contextlib.aclosing(self._stream("FetchX509Bundles", pb.X509BundlesRequest(),
                                                    pb.X509BundlesResponse, "X.509 bundle")) as replies:
            async for response in replies:
                yield messages.x509_bundle_set(response)

    async def fetch_x509_bundles(self, timeout: float = DEFAULT_UNARY_TIMEOUT) -> X509BundleSet:
        """The current X.509 bundle set (first message of FetchX509Bundles)."""
        return await _first_of(self.watch_x509_bundles(), timeout, "FetchX509Bundles")

    async def watch_jwt_bundles(self) -> AsyncGenerator[JwtBundleSet, None]:
        """Stream JWT bundle sets (FetchJWTBundles), each the full state.

        Raises:
            GrpcStatusError: the stream's status, or UNAVAILABLE.
            SpiffeError: a JWKS is invalid.
        """
        async with contextlib.aclosing(self._stream("FetchJWTBundles", pb.JWTBundlesRequest(), pb.JWTBundlesResponse,
                                                    "JWT bundle")) as replies:
            async for response in replies:
                yield messages.jwt_bundle_set(response)

    async def fetch_jwt_bundles(self, timeout: float = DEFAULT_UNARY_TIMEOUT) -> JwtBundleSet:
        """The current JWT bundle set (first message of FetchJWTBundles)."""
        return await _first_of(self.watch_jwt_bundles(), timeout, "FetchJWTBundles")

    async def fetch_jwt_svid(self, audience: str | Sequence[str], spiffe_id: str | None = None, *,
                             timeout: float = DEFAULT_UNARY_TIMEOUT) -> JwtSvid:
        """Fetch a JWT-SVID for ``audience`` (the first one, or ``spiffe_id``'s).

        Raises:
            GrpcStatusError: the call's status (INVALID_ARGUMENT without an
                audience, PERMISSION_DENIED with no matching entry...).
            InvalidSvidError: the response holds no usable token.
        """
        audiences = [audience] if isinstance(audience, str) else list(audience)
        request = pb.JWTSVIDRequest(audience=audiences, spiffe_id=spiffe_id or "")
        payload = await self._unary("FetchJWTSVID", request, timeout)
        svids = messages.jwt_svids(_decode(pb.JWTSVIDResponse, payload))
        if not svids:
            raise InvalidSvidError("the Workload API returned no JWT-SVID", spiffe_id)
        return svids[0]

    async def validate_jwt_svid(self, token: str, audience: str, *,
                                timeout: float = DEFAULT_UNARY_TIMEOUT) -> messages.ValidatedJwtSvid:
        """Ask the agent to validate ``token`` for ``audience`` (ValidateJWTSVID).

        Raises:
            GrpcStatusError: INVALID_ARGUMENT when the token is refused.
            SpiffeError: the answer names an invalid SPIFFE ID.
        """
        request = pb.ValidateJWTSVIDRequest(audience=audience, svid=token)
        payload = await self._unary("ValidateJWTSVID", request, timeout)
        return messages.validated_jwt_svid(_decode(pb.ValidateJWTSVIDResponse, payload))

    # -- transport ------------------------------------------------------------

    async def _unary(self, rpc: str, request: object, timeout: float) -> bytes:
        with _deadline(timeout, rpc):
            async with contextlib.aclosing(self._call(rpc, request, timeout=timeout)) as replies:
                answers = [payload async for payload in replies]
        if len(answers) != 1:
            raise GrpcStatusError(StatusCode.INTERNAL, f"{rpc}: expected one response message, got {len(answers)}")
        return answers[0]

    async def _stream(self, rpc: str, request: object, response_type: type[_M], what: str) -> AsyncGenerator[_M, None]:
        """A server-streaming call's decoded responses; a stream the server ends is UNAVAILABLE.

        The Workload API's streams never end on their own: the agent closing
        one is an outage to retry, not the end of the identity.
        """
        async with contextlib.aclosing(self._call(rpc, request)) as replies:
            async for payload in replies:
                yield _decode(response_type, payload)
        raise GrpcStatusError(StatusCode.UNAVAILABLE, f"the server ended the {what} stream")

    async def _call(self, rpc: str, request: object, *, timeout: float | None = None) -> AsyncGenerator[bytes, None]:
        """Run one call on its own connection; yield each response message.

        Raises:
            GrpcStatusError: a non-OK status, UNAVAILABLE on socket failure,
                CANCELLED when the client is closed.
        """
        if self._closed:
            raise GrpcStatusError(StatusCode.CANCELLED, "the Workload API client is closed")
        stream = await _connect(self.address)
        self._streams.add(stream)
        try:
            conn = GrpcClientConnection(self._authority)
            conn.start_call(_PATH + rpc, request.SerializeToString(), timeout=timeout)  # type: ignore[attr-defined]
            await self._send(stream, conn)
            while True:
                for event in await self._receive(stream, conn):
                    if isinstance(event, MessageReceived):
                        yield event.payload
                    elif isinstance(event, CallEnded):
                        if event.error is not None:
                            raise event.error
                        return
        finally:
            self._streams.discard(stream)
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _send(self, stream: trio.abc.Stream, conn: GrpcClientConnection) -> None:
        data = conn.data_to_send()
        if not data:
            return
        try:
            await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise self._broken(exc) from exc

    async def _receive(self, stream: trio.abc.Stream, conn: GrpcClientConnection) -> list[object]:
        try:
            data = await stream.receive_some(_READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise self._broken(exc) from exc
        events: list[object] = list(conn.receive_data(bytes(data))) if data else list(conn.connection_lost())
        await self._send(stream, conn)
        return events

    def _broken(self, exc: BaseException) -> GrpcStatusError:
        if self._closed:
            return GrpcStatusError(StatusCode.CANCELLED, "the Workload API client was closed")
        return GrpcStatusError(StatusCode.UNAVAILABLE, f"connection to {self.address} broke: {exc}")


def _decode(message_type: type[_M], payload: bytes) -> _M:
    """Parse one response message; an undecodable one is the server's fault (INTERNAL).

    Every response goes through here so a DecodeError never escapes as a non-gRPC
    error (callers retry on GrpcStatusError only).
    """
    message: _M = message_type()
    try:
        message.ParseFromString(payload)
    except DecodeError as exc:
        raise GrpcStatusError(StatusCode.INTERNAL, f"undecodable {message_type.__name__}: {exc}") from None
    return message


@contextlib.contextmanager
def _deadline(timeout: float, rpc: str) -> Iterator[None]:
    with trio.move_on_after(timeout) as scope:
        yield
    if scope.cancelled_caught:
        raise GrpcStatusError(StatusCode.DEADLINE_EXCEEDED, f"{rpc}: no answer within {timeout:g}s")


@contextlib.asynccontextmanager
async def open_workload_api(address: WorkloadApiAddress | str | None = None) -> AsyncGenerator[WorkloadApiClient, None]:
    """Open a Workload API client; closed (running calls CANCELLED) on exit.

    Args:
        address: ``unix:///path``, ``tcp://IP:port``, a parsed address, or
            None for ``SPIFFE_ENDPOINT_SOCKET``.

    Raises:
        ConfigError: the address is missing or invalid.
    """
    client = WorkloadApiClient(address)
    try:
        yield client
    finally:
        await client.aclose()


__all__ = ["DEFAULT_UNARY_TIMEOUT", "WorkloadApiClient", "open_workload_api"]


async def _first_of(updates: AsyncGenerator[_T, None], timeout: float, method: str) -> _T:
    """The first message of a stream under a deadline; the stream is closed after.

    Raises:
        GrpcStatusError: the stream's own error, or DEADLINE_EXCEEDED.
    """
    with _deadline(timeout, method):
        async with contextlib.aclosing(updates) as stream:
            async for item in stream:
                return item
    raise AssertionError("unreachable")  # pragma: no cover
