"""Requests, not just connections: the sans-IO half of ``protocol: http`` listeners.

``detect`` (ALPN, h2c preface or HTTP/1.x), ``normalize`` (Envoy-style path
normalization), ``h1`` (the framing checks h11 leaves to us, hop-by-hop
headers), ``xfcc`` (the caller's identity for the app), ``settings`` (a
listener's protocol and HTTP settings), ``explain`` (a request's decision,
offline). No sockets, no clock; config and policy may import it. The I/O
half (fronts, next hops, the pool, the session) is ``proxy.runtime.http``.
"""
