"""A workload using the standard `spiffe` library (grpcio-based) against the agent.

Prints one JSON document with what it fetched; run as a separate process so
the agent attests a genuinely different pid.
"""

import json
import sys

from spiffe import WorkloadApiClient


def main(endpoint: str) -> None:
    out: dict = {}
    with WorkloadApiClient(socket_path=endpoint) as client:
        ctx = client.fetch_x509_context()
        out["default_svid"] = str(ctx.default_svid.spiffe_id)
        out["svids"] = [str(s.spiffe_id) for s in ctx.x509_svids]
        out["leaf_der_hex"] = ctx.default_svid.leaf.public_bytes(__import__(
            "cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.DER).hex()
        out["x509_bundles"] = sorted(str(b.trust_domain) for b in client.fetch_x509_bundles().bundles)
        jwt_svid = client.fetch_jwt_svid(audience={"spiffe://example.org/backend"})
        out["jwt_spiffe_id"] = str(jwt_svid.spiffe_id)
        out["jwt_token"] = jwt_svid.token
        jwt_bundles = client.fetch_jwt_bundles()
        out["jwt_bundle_kids"] = {str(b.trust_domain): sorted(b.jwt_authorities) for b in jwt_bundles.bundles}
        validated = client.validate_jwt_svid(jwt_svid.token, "spiffe://example.org/backend")
        out["validated_spiffe_id"] = str(validated.spiffe_id)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
