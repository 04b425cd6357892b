"""A grpcio-based SPIFFE Workload API server that tests can program.

It proves interop: the project's own h2-based client must work against
grpcio's HTTP/2 and gRPC implementation, not only against our own server.
Messages use the project's ``workload_pb2`` serializers through grpcio's
generic handlers (the proto has no package, so the service is
``SpiffeWorkloadAPI`` and the paths are ``/SpiffeWorkloadAPI/<Rpc>``).

A test can:

- ``push_x509(response)``: every open FetchX509SVID stream sends it (and
  new streams start with it), which is how rotations, redactions and
  withdrawn federated bundles are played;
- ``fail_next(rpc, code, message, count)``: the next ``count`` calls of
  ``rpc`` end at once with that status;
- ``abort_streams(code, message)``: open streams end with that status;
- read ``calls``: one (rpc, metadata) per call, to check the
  ``workload.spiffe.io`` header;
- ``require_header = False`` to see what a client gets from a lax server.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import grpc
import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import json_format, struct_pb2

from proxy.workload_api import workload_pb2 as pb
from support import pki

SERVICE = "SpiffeWorkloadAPI"


def x509_response(leaves: list[tuple[pki.Leaf, pki.Ca]], federated: dict[str, list[pki.Ca]] | None = None,
                  hints: list[str] | None = None) -> pb.X509SVIDResponse:
    """An X509SVIDResponse with one SVID per (leaf, its trust domain's CA)."""
    resp = pb.X509SVIDResponse()
    for i, (leaf, ca) in enumerate(leaves):
        root = ca
        while root.parent is not None:
            root = root.parent
        resp.svids.add(spiffe_id=leaf.cert.extensions.get_extension_for_class(
            pki.x509.SubjectAlternativeName).value.get_values_for_type(pki.x509.UniformResourceIdentifier)[0],
            x509_svid=b"".join(leaf.chain_der), x509_svid_key=leaf.key_der, bundle=root.der,
            hint=(hints[i] if hints else ""))
    for td, cas in (federated or {}).items():
        resp.federated_bundles[f"spiffe://{td}"] = b"".join(c.der for c in cas)
    return resp


@dataclass
class JwtIssuer:
    """Signs JWT-SVIDs for one trust domain and publishes its JWKS."""

    trust_domain: str
    kid: str = "test-key-1"
    key: Any = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    def token(self, sub: str, audience: list[str], ttl: float = 300) -> str:
        now = int(time.time())
        claims = {"sub": sub, "aud": audience, "exp": now + int(ttl), "iat": now}
        return pyjwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self.kid, "typ": "JWT"})

    def jwks(self) -> bytes:
        import json

        jwk = json.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": self.kid, "use": "jwt-svid"})
        return json.dumps({"keys": [jwk]}).encode()


class GrpcioWorkloadServer:
    """A programmable Workload API on a Unix socket, served by grpcio.

    Args:
        socket_path: where to listen (the address is ``unix://`` + path);
            None listens on a free loopback TCP port (``tcp://127.0.0.1:PORT``).
    """

    def __init__(self, socket_path: str | None) -> None:
        self.socket_path = socket_path or ""
        self.require_header = True
        self.calls: list[tuple[str, list[tuple[str, str]]]] = []
        self.jwt_issuer: JwtIssuer | None = None
        self.jwt_bundles: dict[str, bytes] = {}
        self._cond = threading.Condition()
        self._x509: pb.X509SVIDResponse | None = None
        self._x509_version = 0
        self._abort: tuple[int, grpc.StatusCode, str] = (0, grpc.StatusCode.OK, "")
        self._failures: dict[str, list[tuple[grpc.StatusCode, str]]] = {}
        self._stopping = False
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        self._server.add_generic_rpc_handlers((self._handlers(),))
        if socket_path:
            self._server.add_insecure_port(f"unix:{socket_path}")
            self.address = f"unix://{socket_path}"
        else:
            self.address = f"tcp://127.0.0.1:{self._server.add_insecure_port('127.0.0.1:0')}"

    # -- programming ---------------------------------------------------------

    def start(self) -> "GrpcioWorkloadServer":
        self._server.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._server.stop(grace=0).wait(5)

    def push_x509(self, response: pb.X509SVIDResponse) -> None:
        """Make `response` the full state; open streams send it now."""
        with self._cond:
            self._x509 = response
            self._x509_version += 1
            self._cond.notify_all()

    def push_jwt_bundles(self, bundles: dict[str, bytes]) -> None:
        """Make `bundles` the JWT bundle state; open streams send it now."""
        with self._cond:
            self.jwt_bundles = dict(bundles)
            self._x509_version += 1
            self._cond.notify_all()

    def fail_next(self, rpc: str, code: grpc.StatusCode, message: str = "", count: int = 1) -> None:
        """End the next `count` calls of `rpc` with `code` before any message."""
        with self._cond:
            self._failures.setdefault(rpc, []).extend([(code, message)] * count)

    def abort_streams(self, code: grpc.StatusCode, message: str = "") -> None:
        """End every open stream with `code`."""
        with self._cond:
            self._abort = (self._abort[0] + 1, code, message)
            self._cond.notify_all()

    def count_calls(self, rpc: str) -> int:
        with self._cond:
            return sum(1 for name, _ in self.calls if name == rpc)

    # -- handlers ------------------------------------------------------------

    def _handlers(self) -> grpc.GenericRpcHandler:
        def stream(fn: Callable[..., Iterator[Any]], req: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_stream_rpc_method_handler(fn, request_deserializer=req.FromString,
                                                        response_serializer=lambda m: m.SerializeToString())

        def unary(fn: Callable[..., Any], req: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(fn, request_deserializer=req.FromString,
                                                       response_serializer=lambda m: m.SerializeToString())

        return grpc.method_handlers_generic_handler(SERVICE, {
            "FetchX509SVID": stream(self._fetch_x509_svid, pb.X509SVIDRequest),
            "FetchX509Bundles": stream(self._fetch_x509_bundles, pb.X509BundlesRequest),
            "FetchJWTSVID": unary(self._fetch_jwt_svid, pb.JWTSVIDRequest),
            "FetchJWTBundles": stream(self._fetch_jwt_bundles, pb.JWTBundlesRequest),
            "ValidateJWTSVID": unary(self._validate_jwt_svid, pb.ValidateJWTSVIDRequest),
        })

    def _admit(self, rpc: str, context: grpc.ServicerContext) -> None:
        metadata = [(k, v if isinstance(v, str) else v.decode()) for k, v in context.invocation_metadata()]
        with self._cond:
            self.calls.append((rpc, metadata))
            failures = self._failures.get(rpc)
            failure = failures.pop(0) if failures else None
        if self.require_header and [v for k, v in metadata if k == "workload.spiffe.io"] != ["true"]:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "security header missing from request")
        if failure is not None:
            context.abort(failure[0], failure[1])

    def _watch(self, rpc: str, context: grpc.ServicerContext,
               render: Callable[[], Any | None]) -> Iterator[Any]:
        self._admit(rpc, context)
        sent_version, abort_epoch = -1, self._abort[0]
        while True:
            with self._cond:
                while (self._x509_version == sent_version and self._abort[0] == abort_epoch
                       and not self._stopping and context.is_active()):
                    self._cond.wait(0.05)
                if self._stopping or not context.is_active():
                    return
                if self._abort[0] != abort_epoch:
                    _, code, message = self._abort
                    break
                sent_version, message_out = self._x509_version, render()
            if message_out is not None:
                yield message_out
        context.abort(code, message)

    def _fetch_x509_svid(self, request: pb.X509SVIDRequest, context: grpc.ServicerContext) -> Iterator[Any]:
        return self._watch("FetchX509SVID", context, lambda: self._x509)

    def _fetch_x509_bundles(self, request: pb.X509BundlesRequest, context: grpc.ServicerContext) -> Iterator[Any]:
        def render() -> pb.X509BundlesResponse | None:
            if self._x509 is None:
                return None
            out = pb.X509BundlesResponse()
            for svid in self._x509.svids:
                td = "spiffe://" + svid.spiffe_id.split("/")[2]
                out.bundles.setdefault(td, svid.bundle)
            for td, blob in self._x509.federated_bundles.items():
                out.bundles[td] = blob
            return out

        return self._watch("FetchX509Bundles", context, render)

    def _fetch_jwt_bundles(self, request: pb.JWTBundlesRequest, context: grpc.ServicerContext) -> Iterator[Any]:
        return self._watch("FetchJWTBundles", context, lambda: pb.JWTBundlesResponse(bundles=self.jwt_bundles))

    def _fetch_jwt_svid(self, request: pb.JWTSVIDRequest, context: grpc.ServicerContext) -> pb.JWTSVIDResponse:
        self._admit("FetchJWTSVID", context)
        if not request.audience:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "audience must be specified")
        assert self.jwt_issuer is not None
        sub = request.spiffe_id or f"spiffe://{self.jwt_issuer.trust_domain}/workload"
        return pb.JWTSVIDResponse(svids=[pb.JWTSVID(spiffe_id=sub, svid=self.jwt_issuer.token(sub, list(request.audience)))])

    def _validate_jwt_svid(self, request: pb.ValidateJWTSVIDRequest,
                           context: grpc.ServicerContext) -> pb.ValidateJWTSVIDResponse:
        self._admit("ValidateJWTSVID", context)
        assert self.jwt_issuer is not None
        try:
            claims = pyjwt.decode(request.svid, self.jwt_issuer.key.public_key(), algorithms=["ES256"],
                                  audience=request.audience)
        except pyjwt.PyJWTError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"token is invalid: {exc}")
        struct = struct_pb2.Struct()
        json_format.ParseDict(claims, struct)
        return pb.ValidateJWTSVIDResponse(spiffe_id=claims["sub"], claims=struct)


def expired_leaf(ca: pki.Ca, path: str = "/workload") -> pki.Leaf:
    """A leaf whose NotAfter is already past."""
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)
    return pki.make_svid(ca, path, not_before=start, lifetime=dt.timedelta(hours=1))
