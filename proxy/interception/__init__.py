"""Transparent interception: iptables rules (the init-container role) and the
helpers the transparent listeners call on accepted sockets.

- ``proxy.interception.original_dst.original_destination(sock)``: where a
  redirected connection was going (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST);
  for the runtime drivers, which own the sockets.
- ``proxy.interception.sniff.peek_is_tls_client_hello(data)``: permissive
  mode's TLS-or-plaintext decision; pure, usable by the sans-IO core.
- ``proxy.interception.rules`` / ``proxy.interception.iptables``: the rule
  model and the install/remove/show of `spiffe-sidecar iptables`.

Nothing is imported here on purpose: importing the package must not pull
the socket module into the sans-IO core.
"""
