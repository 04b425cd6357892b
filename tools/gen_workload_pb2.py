"""Regenerate proxy/workload_api/workload_pb2.py from workload.proto.

Why a script and not a bare protoc call: the Workload API proto has no
package, so its message names (X509SVIDRequest, ...) are global in
protobuf's default descriptor pool. The `spiffe` client library registers
the very same names, and a process that imports both would fail with
"duplicate symbol". We therefore rewrite the generated module to build its
descriptors in a private pool (with google/protobuf/struct.proto added
first), keeping the generated code otherwise untouched.

Usage: python tools/gen_workload_pb2.py   (needs grpcio-tools)
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent.parent / "proxy" / "workload_api"

PRIVATE_POOL = (
    "from google.protobuf import struct_pb2 as _struct_pb2\n"
    "# Private pool: see tools/gen_workload_pb2.py for why.\n"
    "_POOL = _descriptor_pool.DescriptorPool()\n"
    "_POOL.AddSerializedFile(_struct_pb2.DESCRIPTOR.serialized_pb)\n"
)


def main() -> int:
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{HERE}",
         f"--python_out={HERE}", f"--pyi_out={HERE}", str(HERE / "workload.proto")],
        check=True,
    )
    target = HERE / "workload_pb2.py"
    text = target.read_text()
    marker = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
    if marker not in text:
        print("unexpected protoc output: default-pool line not found", file=sys.stderr)
        return 1
    text = text.replace(marker, PRIVATE_POOL + "DESCRIPTOR = _POOL.AddSerializedFile(")
    target.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
