"""Transparent interception: iptables rules (the init-container role) and the
helpers the transparent listeners call on accepted sockets.

- ``proxy.interception.original_dst.original_destination(sock)``: where a
  redirected connection was going (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST);
  for the runtime drivers, which own the sockets.
- ``proxy.connection.sniff.peek_is_tls_client_hello(data)`` (re-exported by
  original_dst): permissive mode's TLS-or-plaintext decision; pure, so it
  lives in the sans-IO core.
- ``proxy.interception.original_dst.tproxy_destination(sock)``: the same
  after TPROXY, where the socket's own address is the original destination.
- ``proxy.interception.rules`` / ``table`` / ``routing`` / ``iptables``: the
  rule model (nat REDIRECT, mangle TPROXY), one table's restore text, the
  policy routing TPROXY needs, and the install/remove/show of
  `spiffe-sidecar iptables`.

Nothing is imported here on purpose: importing the package must not pull
the socket module into the sans-IO core.
"""
