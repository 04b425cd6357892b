"""Requests, not just connections: the HTTP layer of ``protocol: http`` listeners.

Sans-IO parts (no sockets, no clock): ``detect`` (ALPN, h2c preface or
HTTP/1.x), ``normalize`` (Envoy-style path normalization), ``xfcc`` (the
caller's identity for the app), ``request`` (one request's view for the
policy). The I/O lives in ``proxy.http.serve`` (inbound), ``proxy.http.client``
and ``proxy.http.pool`` (outbound), on the runtime's ``Io``.
"""
