"""Watch FetchX509SVID with plain grpcio; one JSON line per stream message.

argv: endpoint seconds [then-setuid-to-uid]. Ends with one JSON line holding
the final status code and message (DEADLINE_EXCEEDED when `seconds` ran out).
"""

import json
import os
import sys
import time

import grpc
from cryptography import x509

from proxy.workload_api import workload_pb2 as pb


def main(endpoint: str, seconds: float, setuid: int | None) -> None:
    channel = grpc.insecure_channel(endpoint)
    call = channel.unary_stream("/SpiffeWorkloadAPI/FetchX509SVID",
                                request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=pb.X509SVIDResponse.FromString)
    stream = call(pb.X509SVIDRequest(), metadata=[("workload.spiffe.io", "true")], timeout=seconds)
    try:
        for resp in stream:
            svids = []
            for s in resp.svids:
                cert = x509.load_der_x509_certificate(s.x509_svid)
                svids.append({"spiffe_id": s.spiffe_id, "serial": cert.serial_number,
                              "not_after": cert.not_valid_after_utc.timestamp(), "hint": s.hint})
            print(json.dumps({"t": time.time(), "svids": svids, "federated": sorted(resp.federated_bundles)}),
                  flush=True)
            if setuid is not None:
                os.setgid(setuid)
                os.setuid(setuid)
                setuid = None
        print(json.dumps({"code": "OK", "message": ""}), flush=True)
    except grpc.RpcError as exc:
        print(json.dumps({"code": exc.code().name, "message": exc.details()}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else None)
