"""The variants a run compares: direct, spiffe-sidecar (three flavours), and
the C proxies people would otherwise deploy as a sidecar pair."""
