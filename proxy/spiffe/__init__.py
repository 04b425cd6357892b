"""The SPIFFE core: IDs, SVIDs, bundles and peer verification, sans-IO.

Nothing here opens a socket or reads the clock: time comes in as ``now``
(Unix seconds), so every rule is testable with fixed certificates.
"""

from proxy.spiffe.id import SpiffeId, TrustDomain

__all__ = ["SpiffeId", "TrustDomain"]
