"""Load generators: wrk (requests), openssl s_time (handshakes), a bulk
sender and an idle-connection holder. Each is bounded in time and count."""
