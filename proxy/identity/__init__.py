"""Our own identity: Workload API or files -> validated immutable snapshot -> new TLS contexts.

The path, one module per step:

- ``address.py``: ``SPIFFE_ENDPOINT_SOCKET`` / ``--address`` (``unix:///path``, ``tcp://IP:port``).
- ``client.py`` (trio): Workload API calls on our sans-IO gRPC layer
  (``proxy.workload_api.grpc_client``), one connection per call.
- ``messages.py``: Workload API messages -> SPIFFE values, full-state semantics.
- ``source.py`` (trio): ``run_x509_source`` streams forever, retries by status
  code, publishes to the store; ``wait_for_first_svid`` bounds the start.
- ``files.py``: the same snapshots from PEM files (spiffe-helper, cert-manager).
- ``snapshot.py``, ``store.py``, ``rotation.py``, ``swap.py``: sans-IO; the
  snapshot, the one-reference store, the rotation arithmetic, and the
  context pair rebuilt per snapshot.
- ``diagnose.py``: "why is there no SVID?" for operators.

Nothing is re-exported here, so importing the sans-IO modules never imports trio.
"""
