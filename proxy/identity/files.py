"""The file identity source: PEM SVID, key and bundles, reloaded on change.

For workloads whose SVIDs are written to disk by someone else:
spiffe-helper (``svid.pem``, ``svid_key.pem``, ``svid_bundle.pem``),
cert-manager and its csi-driver-spiffe (``tls.crt``, ``tls.key``,
``ca.crt``, swapped atomically through a ``..data`` symlink). Federated
trust domains can be given as extra PEM bundles, one per trust domain.

Change detection is polling: every ``interval`` seconds the (inode, mtime,
size) of every file is compared with the last attempt's; paths are
followed through symlinks, so an atomic symlink swap is a change. A
change triggers one load; a half-written or invalid file set (key not
matching the certificate, a truncated PEM, a missing own-domain bundle)
keeps the last good snapshot, and the error says which file and which
rule. The same signature is not retried until a file changes again.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping, NoReturn

import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from proxy.errors import InvalidBundleError, InvalidSvidError, NoIdentityError, SpiffeError
from proxy.identity.snapshot import IdentitySnapshot
from proxy.identity.store import IdentityStore, SourceState, SourceStatus
from proxy.spiffe.bundle import X509Bundle, X509BundleSet
from proxy.spiffe.id import TrustDomain
from proxy.spiffe.svid import X509Svid

Signature = tuple[tuple[int, int, int] | None, ...]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class SvidFiles:
    """Where the PEM files are.

    Attributes:
        cert: our certificate chain, leaf first (svid.pem / tls.crt).
        key: our PKCS#8 or traditional PEM private key (svid_key.pem / tls.key).
        bundle: the CA certificates of our own trust domain (svid_bundle.pem / ca.crt).
        federated: trust domain name -> PEM bundle of that federated trust domain.
    """

    cert: str
    key: str
    bundle: str
    federated: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def paths(self) -> tuple[str, ...]:
        """Every file, in a stable order."""
        return (self.cert, self.key, self.bundle, *(self.federated[td] for td in sorted(self.federated)))

    @property
    def source(self) -> str:
        """How snapshots from these files are labelled."""
        return f"files:{self.cert}"


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise NoIdentityError(f"{path}: cannot read: {exc.strerror}") from None


def _pem_bundle(trust_domain: TrustDomain, path: str) -> X509Bundle:
    data = _read(path)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise InvalidBundleError(f"{path}: not a PEM certificate bundle ({exc})") from None
    try:
        return X509Bundle(trust_domain=trust_domain,
                          authorities=tuple(c.public_bytes(serialization.Encoding.DER) for c in certs))
    except InvalidBundleError as exc:
        raise InvalidBundleError(f"{path}: {exc}") from None


def load_snapshot(files: SvidFiles) -> IdentitySnapshot:
    """Read and validate the files once.

    Raises:
        NoIdentityError: a file cannot be read (names the path).
        SpiffeError: the SVID or a bundle breaks a rule (names the path).
    """
    try:
        svid = X509Svid.from_pem(_read(files.cert), _read(files.key))
    except InvalidSvidError as exc:
        raise InvalidSvidError(f"{files.cert} with {files.key}: {exc.rule}", exc.spiffe_id) from None
    own = svid.spiffe_id.trust_domain
    bundles = [_pem_bundle(own, files.bundle)]
    for name, path in sorted(files.federated.items()):
        td = TrustDomain.parse(name)
        if td == own:
            raise InvalidBundleError(f"{path}: federated bundle for our own trust domain {td.name}")
        bundles.append(_pem_bundle(td, path))
    return IdentitySnapshot(svid=svid, svids=(svid,), bundles=X509BundleSet(bundles), source=files.source)


def _signature(files: SvidFiles) -> Signature:
    out: list[tuple[int, int, int] | None] = []
    for path in files.paths:
        try:
            st = os.stat(path)
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


class FileSource:
    """Polls ``files`` and publishes each new valid set to ``store``.

    Args:
        files: the paths.
        store: where snapshots go and state is reported.
        clock: the wall clock (tests pass their own).
        on_state: also called with each state report.
    """

    def __init__(self, files: SvidFiles, store: IdentityStore, *, clock: Callable[[], float] = time.time,
                 on_state: Callable[[SourceState], None] | None = None) -> None:
        self.files, self.store, self.clock, self.on_state = files, store, clock, on_state
        self.last_error: str | None = None
        self._seen: Signature | None = None

    def poll(self) -> bool:
        """Reload if any file changed since the last attempt; True when a snapshot was published."""
        signature = _signature(self.files)
        if signature == self._seen:
            return False
        self._seen = signature
        try:
            snapshot = load_snapshot(self.files)
            changed = not self._unchanged(snapshot)
            if changed:
                self.store.publish(snapshot, self.clock())
        except (SpiffeError, NoIdentityError) as exc:
            # Logged once per change of the files (poll skips unchanged ones); never served.
            _log.error("refused the identity files: %s", exc)
            self._report(SourceStatus.INVALID, str(exc))
            return False
        self._report(SourceStatus.LOADED, None)
        return changed

    def _unchanged(self, snapshot: IdentitySnapshot) -> bool:
        current = self.store.latest
        return (current is not None and current.svid == snapshot.svid
                and current.bundles.der_map() == snapshot.bundles.der_map())

    def _report(self, state: SourceStatus, error: str | None) -> None:
        self.last_error = error
        report = SourceState(state, source=self.files.source, last_error=error, since=self.clock())
        self.store.report(report)
        if self.on_state is not None:
            self.on_state(report)


async def run_file_source(files: SvidFiles, store: IdentityStore, *, interval: float = 1.0,
                          clock: Callable[[], float] = time.time,
                          on_state: Callable[[SourceState], None] | None = None,
                          require_first: bool = False) -> NoReturn:
    """Poll ``files`` every ``interval`` seconds forever (cancel to stop).

    After the first load, never raises for bad files: the error is reported
    to the store (and ``on_state``) and the last good snapshot stays in use.

    Args:
        require_first: raise at once when the first load fails. Files do not
            fix themselves the way a Workload API that is still starting does:
            waiting out ``first_svid_timeout`` in silence would only delay the
            same error (the sidecar sets it).

    Raises:
        NoIdentityError: with ``require_first``, the files cannot be loaded now (names the file and why).
    """
    source = FileSource(files, store, clock=clock, on_state=on_state)
    source.poll()
    if require_first and store.current(clock()) is None:
        raise NoIdentityError(f"cannot use the identity files: {source.last_error or 'no usable SVID'}")
    while True:
        await trio.sleep(interval)
        source.poll()
