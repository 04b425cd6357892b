"""Transparent interception: iptables rules (init-container role) and the
helpers the transparent listeners call on accepted sockets.

The data plane imports only `original_destination` and
`peek_is_tls_client_hello` from here; the iptables half runs as its own
command, usually once per pod before the app starts.
"""

from proxy.interception.original_dst import original_destination, peek_is_tls_client_hello
from proxy.interception.rules import InterceptionSpec

__all__ = ["InterceptionSpec", "original_destination", "peek_is_tls_client_hello"]
