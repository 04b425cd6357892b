"""The HTTP listeners' I/O: fronts (h11/h2 servers), the next hop (h11/h2 clients), the pool, the session.

The sans-IO half (detection, normalization, XFCC, framing checks,
settings) is ``proxy.http``; this half runs on the runtime's ``Io``.
"""
