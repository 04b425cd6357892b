"""`spiffe-sidecar svid fetch|watch` and `spiffe-sidecar jwt fetch|validate`: what a workload gets.

The address is ``--address`` (``unix:///path`` or ``tcp://IP:port``) or
``SPIFFE_ENDPOINT_SOCKET``. ``svid fetch --write DIR`` writes the files
spiffe-helper writes: ``svid.pem`` (chain, 0644), ``svid_key.pem`` (PKCS#8,
0600), ``bundle.pem`` (own trust domain, 0644) and one
``federated_<trust domain>.pem`` per federated trust domain.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time
from pathlib import Path

import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from proxy.identity import rotation
from proxy.identity.client import open_workload_api
from proxy.identity.messages import ValidatedJwtSvid
from proxy.commands import plain
from proxy.errors import NoIdentityError
from proxy.identity.snapshot import X509Context, authorities_summary, select_svid
from proxy.identity.source import Backoff, reconnecting
from proxy.spiffe.jwt_svid import JwtSvid
from proxy.workload_api.grpc import GrpcStatusError, StatusCode


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the `svid` and `jwt` subcommands."""
    svid = sub.add_parser("svid", help="fetch or watch this workload's X.509-SVID from the Workload API",
                          description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    svid_sub = svid.add_subparsers(dest="svid_command", metavar="ACTION", required=True)
    fetch = svid_sub.add_parser("fetch", help="print the SVID (and write PEM files with --write)")
    _common(fetch)
    _choose(fetch)
    fetch.add_argument("--write", metavar="DIR", help="write svid.pem, svid_key.pem, bundle.pem like spiffe-helper")
    fetch.set_defaults(func=cmd_svid_fetch)
    watch = svid_sub.add_parser("watch", help="print every X.509 update until Ctrl-C (reconnects on failure)")
    _common(watch)
    _choose(watch)
    watch.set_defaults(func=cmd_svid_watch)

    jwt = sub.add_parser("jwt", help="fetch or validate JWT-SVIDs through the Workload API")
    jwt_sub = jwt.add_subparsers(dest="jwt_command", metavar="ACTION", required=True)
    jfetch = jwt_sub.add_parser("fetch", help="print a JWT-SVID's subject, expiry and token")
    _common(jfetch)
    jfetch.add_argument("--audience", "-a", required=True, action="append", help="audience (repeatable)")
    jfetch.add_argument("--spiffe-id", help="ask for this SPIFFE ID's token when several are entitled")
    jfetch.set_defaults(func=cmd_jwt_fetch)
    jvalidate = jwt_sub.add_parser("validate", help="have the agent validate a token for an audience")
    _common(jvalidate)
    jvalidate.add_argument("--audience", "-a", required=True, help="the audience the token must name")
    jvalidate.add_argument("token", help="the JWT-SVID (compact JWS) to validate")
    jvalidate.set_defaults(func=cmd_jwt_validate)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="Workload API address (default: $SPIFFE_ENDPOINT_SOCKET)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for an answer (default 10)")


def _choose(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spiffe-id", metavar="ID", help="only the SVID with this SPIFFE ID (or hint), when the "
                   "Workload API offers several (default: all; --write writes the first)")


def chosen(context: X509Context, want: str | None) -> X509Context:
    """``context`` with only the SVID ``want`` names (all of them when None).

    Raises:
        NoIdentityError: none has that SPIFFE ID or hint (the message lists what was offered).
    """
    if want is None:
        return context
    return dataclasses.replace(context, svids=(select_svid(context.svids, want),))


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def describe(context: X509Context, now: float) -> str:
    """Human summary of an X.509 update."""
    lines: list[str] = []
    if context.redacted:
        lines.append("no X.509-SVID (none issued, or redacted by the server)")
    for i, svid in enumerate(context.svids):
        tag = " (default)" if i == 0 and len(context.svids) > 1 else ""
        hint = f" hint={svid.hint!r}" if svid.hint else ""
        lines.append(f"SPIFFE ID: {svid.spiffe_id}{tag}{hint}")
        lines.append(f"  expires: {_when(svid.not_after)} ({rotation.describe_expiry(svid.not_after, now)}, "
                     f"{int(rotation.seconds_to_expiry(svid.not_after, now))}s left)")
        lines.append(f"  chain: {len(svid.chain_der)} certificate(s)")
    for name, count in authorities_summary(context.bundles).items():
        lines.append(f"trust domain: {name} ({count} authorit{'y' if count == 1 else 'ies'})")
    return "\n".join(lines)


def _pem(ders: tuple[bytes, ...] | list[bytes]) -> bytes:
    return b"".join(x509.load_der_x509_certificate(d).public_bytes(serialization.Encoding.PEM) for d in ders)


def _write_file(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)  # readers never see a half-written file


def write_pem_files(context: X509Context, directory: str) -> list[Path]:
    """Write the default SVID, its key and the bundles like spiffe-helper; return the paths."""
    svid = context.default_svid
    if svid is None:
        raise GrpcStatusError(StatusCode.PERMISSION_DENIED, "no X.509-SVID to write (redacted)")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    chain_pem, key_pem = svid.to_pem()
    own = svid.spiffe_id.trust_domain
    written = [(out / "svid.pem", chain_pem, 0o644), (out / "svid_key.pem", key_pem, 0o600),
               (out / "bundle.pem", _pem(context.bundles[own].authorities) if own in context.bundles else b"",
                0o644)]
    for td, bundle in sorted(context.bundles.items()):
        if td != own:
            written.append((out / f"federated_{td.name}.pem", _pem(bundle.authorities), 0o644))
    for path, data, mode in written:
        _write_file(path, data, mode)
    return [path for path, _, _ in written]


def cmd_svid_fetch(args: argparse.Namespace) -> int:
    """`svid fetch`: print (and optionally write) the current X.509 context."""
    async def main() -> X509Context:
        async with open_workload_api(args.address) as client:
            return await client.fetch_x509_context(timeout=args.timeout)

    try:
        context = chosen(trio.run(main), args.spiffe_id)
    except NoIdentityError as exc:
        print(f"spiffe-sidecar: {exc}", file=sys.stderr)
        return 1
    print(describe(context, time.time()))
    if args.write:
        for path in write_pem_files(context, args.write):
            print(f"wrote {path}")
    return 0 if context.svids else 1


def cmd_svid_watch(args: argparse.Namespace) -> int:
    """`svid watch`: print each update until interrupted; reconnect as the sidecar's source does."""
    def on_failure(exc: GrpcStatusError, attempt: int) -> None:
        print(f"--- stream broke ({exc}); reconnecting (attempt {attempt})", file=sys.stderr, flush=True)

    async def main() -> None:
        async with open_workload_api(args.address) as client:
            async with contextlib.aclosing(reconnecting(client.watch_x509_context, backoff=Backoff(),
                                                        on_failure=on_failure)) as updates:
                count = 0
                async for context in updates:
                    count += 1
                    print(f"--- update {count} at {_when(time.time())}")
                    try:
                        print(describe(chosen(context, args.spiffe_id), time.time()), flush=True)
                    except NoIdentityError as exc:
                        print(exc, flush=True)

    try:
        trio.run(main)
    except KeyboardInterrupt:
        return 0
    return 1


def cmd_jwt_fetch(args: argparse.Namespace) -> int:
    """`jwt fetch`: print the subject, audience, expiry, then the token on its own line."""
    async def main() -> JwtSvid:
        async with open_workload_api(args.address) as client:
            return await client.fetch_jwt_svid(args.audience, args.spiffe_id, timeout=args.timeout)

    svid = trio.run(main)
    now = time.time()
    print(f"subject: {svid.spiffe_id}", file=sys.stderr)
    print(f"audience: {', '.join(svid.audience)}", file=sys.stderr)
    print(f"expires: {_when(svid.expiry)} ({rotation.describe_expiry(svid.expiry, now)})",
          file=sys.stderr)
    print(svid.token)
    return 0


def cmd_jwt_validate(args: argparse.Namespace) -> int:
    """`jwt validate`: ask the agent; print the subject and claims, exit 1 if refused."""
    async def main() -> ValidatedJwtSvid:
        async with open_workload_api(args.address) as client:
            return await client.validate_jwt_svid(args.token, args.audience, timeout=args.timeout)

    try:
        result = trio.run(main)
    except GrpcStatusError as exc:
        if exc.status != StatusCode.INVALID_ARGUMENT:
            raise
        print(f"invalid: {exc.message}")
        return 1
    print(f"valid: subject {result.spiffe_id}")
    for key, value in sorted(result.claims.items()):
        print(f"  {key}: {value}")
    return 0
