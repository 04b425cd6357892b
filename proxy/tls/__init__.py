"""TLS for the data plane: material snapshots and the engine (compiled or pyOpenSSL)."""
