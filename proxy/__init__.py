"""spiffe-sidecar: SPIFFE identities for every workload, enforced on every connection.

The public API is re-exported here explicitly (a test guards the list).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
