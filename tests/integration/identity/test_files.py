"""The file source: PEM files as spiffe-helper or cert-manager write them, reloaded on change."""

from __future__ import annotations

import os
import time
from pathlib import Path

import trio
from support import pki

from proxy.identity.files import FileSource, SvidFiles, load_snapshot, run_file_source
from proxy.identity.store import IdentityStore, SourceStatus

NOW = time.time()
NOW_FROM_WALL_CLOCK = True  # refreshed before each test by tests/conftest.py


def write_set(d: Path, ca: pki.Ca, path: str = "/web", fed: pki.Ca | None = None) -> SvidFiles:
    leaf = pki.make_svid(ca, path)
    cert, key = leaf.write_pem(d, "svid")
    (d / "bundle.pem").write_bytes(pki.pem(ca.cert))
    federated = {}
    if fed is not None:
        (d / "partner.pem").write_bytes(pki.pem(fed.cert))
        federated = {"partner.test": str(d / "partner.pem")}
    return SvidFiles(cert=cert, key=key, bundle=str(d / "bundle.pem"), federated=federated)


def bump(path: str) -> None:
    """Force a visible mtime change even within the filesystem's timestamp granularity."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_loads_svid_key_and_bundles(tmp_path, ca, fed_ca) -> None:
    snap = load_snapshot(write_set(tmp_path, ca, fed=fed_ca))
    assert snap.spiffe_id == "spiffe://example.org/web"
    assert snap.trust_domains == ("example.org", "partner.test") and snap.source.startswith("files:")


def test_reloads_on_change_and_skips_unchanged(tmp_path, ca) -> None:
    store = IdentityStore()
    files = write_set(tmp_path, ca, "/one")
    source = FileSource(files, store)
    assert source.poll() and store.current(NOW).spiffe_id == "spiffe://example.org/one"
    assert not source.poll()  # nothing changed
    write_set(tmp_path, ca, "/two")
    bump(files.cert)
    assert source.poll() and store.current(NOW).spiffe_id == "spiffe://example.org/two"
    assert store.generation == 2


def test_half_written_file_keeps_last_good_and_says_which(tmp_path, ca) -> None:
    store = IdentityStore()
    files = write_set(tmp_path, ca)
    source = FileSource(files, store)
    source.poll()
    good = store.current(NOW)
    data = Path(files.cert).read_bytes()
    Path(files.cert).write_bytes(data[: len(data) // 2])
    bump(files.cert)
    assert not source.poll()
    assert store.current(NOW) is good
    assert files.cert in (source.last_error or "") and store.state.state is SourceStatus.INVALID
    Path(files.cert).write_bytes(data)  # the writer finishes
    bump(files.cert)
    assert source.poll() is False  # same SVID as before: nothing to rebuild
    assert store.current(NOW) is good and store.state.state is SourceStatus.LOADED


def test_key_from_another_svid_is_refused(tmp_path, ca) -> None:
    store = IdentityStore()
    files = write_set(tmp_path, ca)
    source = FileSource(files, store)
    source.poll()
    other = pki.make_svid(ca, "/other")
    _, other_key = other.write_pem(tmp_path, "other")
    os.replace(other_key, files.key)
    assert not source.poll() and files.key in (source.last_error or "")
    assert store.current(NOW).spiffe_id == "spiffe://example.org/web"


def test_missing_file_is_reported_with_its_path(tmp_path, ca) -> None:
    store = IdentityStore()
    files = write_set(tmp_path, ca)
    os.unlink(files.bundle)
    source = FileSource(files, store)
    assert not source.poll() and f"{files.bundle}: cannot read" in (source.last_error or "")
    assert store.current(NOW) is None


def test_atomic_symlink_swap_is_a_change(tmp_path, ca) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    write_set(tmp_path / "v1", ca, "/v1")
    write_set(tmp_path / "v2", ca, "/v2")
    os.symlink("v1", tmp_path / "..data")
    files = SvidFiles(cert=str(tmp_path / "..data/svid.pem"), key=str(tmp_path / "..data/svid.key.pem"),
                      bundle=str(tmp_path / "..data/bundle.pem"))
    store = IdentityStore()
    source = FileSource(files, store)
    source.poll()
    os.symlink("v2", tmp_path / "..tmp")
    os.replace(tmp_path / "..tmp", tmp_path / "..data")  # what Kubernetes' atomic writer does
    assert source.poll() and store.current(NOW).spiffe_id == "spiffe://example.org/v2"


def test_federated_bundle_removed_from_config_is_withdrawn(tmp_path, ca, fed_ca) -> None:
    store = IdentityStore()
    with_fed = write_set(tmp_path, ca, fed=fed_ca)
    FileSource(with_fed, store).poll()
    without = SvidFiles(cert=with_fed.cert, key=with_fed.key, bundle=with_fed.bundle)
    FileSource(without, store).poll()
    assert store.current(NOW).trust_domains == ("example.org",)


def test_runner_polls_until_cancelled(tmp_path, ca) -> None:
    files = write_set(tmp_path, ca, "/first")
    store = IdentityStore()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: run_file_source(files, store, interval=0.02))
            with trio.fail_after(5):
                while store.generation < 1:
                    await trio.sleep(0.01)
                write_set(tmp_path, ca, "/second")
                bump(files.cert)
                while store.generation < 2:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert store.current(time.time()).spiffe_id == "spiffe://example.org/second"
