"""Our own side obeys the strength policy: a weak SVID or bundle is refused where it arrives, never served.

From files (the message names the file) and from a real Workload API over
a Unix socket (the message names its address); either way the last good
identity stays in use. The policy is proxy/spiffe/strength.py.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import trio
from support import pki
from support import pki_cli as cli
from support.grpcio_workload_server import x509_response

from proxy.identity.files import FileSource, SvidFiles
from proxy.identity.source import Backoff, run_x509_source, wait_for_first_svid
from proxy.identity.store import IdentityStore, SourceStatus


def _files(d: Path, leaf: pki.Leaf, bundle: pki.Ca) -> SvidFiles:
    cert, key = leaf.write_pem(d, "svid")
    (d / "bundle.pem").write_bytes(pki.pem(bundle.cert))
    return SvidFiles(cert=cert, key=key, bundle=str(d / "bundle.pem"))


@pytest.mark.parametrize("case, reason", [
    ("leaf_rsa1024", "weak_key"), ("leaf_explicit_p256", "weak_key"), ("leaf_signed_sha1", "weak_signature"),
    ("intermediate_signed_md5", "weak_signature"), ("intermediate_p224", "weak_key"),
])
def test_weak_svid_files_are_refused_naming_the_file(tmp_path, case, reason, caplog) -> None:
    root = pki.make_ca("example.org", key_kind="rsa")
    good_dir, bad_dir = tmp_path / "good", tmp_path / "bad"
    good_dir.mkdir(), bad_dir.mkdir()
    store = IdentityStore()
    assert FileSource(_files(good_dir, pki.make_svid(root, "/good"), root), store).poll()
    good = store.current(time.time())
    leaf = {
        "leaf_rsa1024": lambda: cli.make_svid(root, "/weak", key_kind="rsa1024"),
        "leaf_explicit_p256": lambda: cli.make_svid(root, "/weak", key_kind="explicit_p256"),
        "leaf_signed_sha1": lambda: cli.make_svid(root, "/weak", digest="sha1"),
        "intermediate_signed_md5": lambda: pki.make_svid(cli.make_ca("example.org", parent=root, digest="md5"),
                                                         "/weak"),
        "intermediate_p224": lambda: pki.make_svid(cli.make_ca("example.org", parent=root, key_kind="p224"), "/weak"),
    }[case]()
    files = _files(bad_dir, leaf, root)
    source = FileSource(files, store)
    with caplog.at_level(logging.ERROR, logger="proxy.identity.files"):
        assert not source.poll()
    assert store.current(time.time()) is good and store.state.state is SourceStatus.INVALID
    error = source.last_error or ""
    assert files.cert in error and reason in error, error
    assert files.cert in caplog.text and reason in caplog.text


def test_bundle_file_with_a_weak_authority_is_refused_naming_the_file(tmp_path) -> None:
    weak_root = cli.make_ca("example.org", key_kind="rsa1024")
    files = _files(tmp_path, pki.make_svid(weak_root), weak_root)
    source = FileSource(files, IdentityStore())
    assert not source.poll()
    error = source.last_error or ""
    assert files.bundle in error and "weak_key" in error and "1024 bits" in error, error


FAST = Backoff(initial=0.01, maximum=0.05, jitter=0.1)


@pytest.mark.parametrize("case", ["weak_svid", "weak_bundle"])
def test_weak_update_from_the_workload_api_is_refused_and_never_served(serving, ca, case, caplog) -> None:
    if case == "weak_svid":
        update = x509_response([(cli.make_svid(ca, "/weak", key_kind="rsa1024"), ca)])
    else:
        weak_root = cli.make_ca("example.org", key_kind="p192")
        update = x509_response([(pki.make_svid(weak_root, "/weak"), weak_root)])

    async def body(store: IdentityStore) -> None:
        good = await wait_for_first_svid(store, 5)
        serving.push_x509(update)
        with trio.fail_after(5):
            while "weak_key" not in (store.state.last_error or ""):
                await trio.sleep(0.01)
        assert store.current(time.time()) is good
        assert serving.address in (store.state.last_error or "")

    async def main() -> None:
        store = IdentityStore()
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: run_x509_source(serving.address, store, backoff=FAST,
                                                                    task_status=task_status))
            await body(store)
            nursery.cancel_scope.cancel()

    with caplog.at_level(logging.ERROR, logger="proxy.identity.source"):
        trio.run(main)
    assert "weak_key" in caplog.text and serving.address in caplog.text
