"""One exception tree for the whole sidecar, and the reason enums.

Every error carries the context a person needs to act on it (the input, the
rule, the file/line/field). Runtime drivers map their own exceptions
(trio.BrokenResourceError, OSError, ssl errors...) into this tree at one
place, so the core and the logs only ever see these types.

The reason enums double as metric label values: their values are short,
stable, lowercase strings, and no unbounded input ever becomes a label.
"""

from __future__ import annotations

import enum
import errno


class SidecarError(Exception):
    """Base of every error raised by spiffe-sidecar."""


# --- SPIFFE values --------------------------------------------------------


class SpiffeError(SidecarError):
    """A SPIFFE value (ID, SVID, bundle, token) violates the SPIFFE standards."""


class InvalidSpiffeIdError(SpiffeError, ValueError):
    """A string is not a valid SPIFFE ID or trust domain.

    Attributes:
        value: the rejected input, verbatim.
        rule: which rule of the SPIFFE-ID spec it breaks.
    """

    def __init__(self, value: str, rule: str) -> None:
        self.value = value
        self.rule = rule
        super().__init__(f"Invalid SPIFFE ID {value!r}: {rule}")


class InvalidTrustDomainError(InvalidSpiffeIdError):
    """A string is not a valid trust domain name."""

    def __init__(self, value: str, rule: str) -> None:
        self.value = value
        self.rule = rule
        SpiffeError.__init__(self, f"Invalid trust domain {value!r}: {rule}")


class InvalidSvidError(SpiffeError):
    """An X.509-SVID or JWT-SVID breaks a rule of its profile.

    Attributes:
        rule: the rule broken, in words (e.g. "leaf must not be a CA").
        spiffe_id: the claimed SPIFFE ID when one could be read, else None.
    """

    def __init__(self, rule: str, spiffe_id: str | None = None) -> None:
        self.rule = rule
        self.spiffe_id = spiffe_id
        where = f" (claimed {spiffe_id})" if spiffe_id else ""
        super().__init__(f"Invalid SVID{where}: {rule}")


class InvalidBundleError(SpiffeError):
    """A trust bundle (X.509 or JWKS) cannot be parsed or breaks the bundle format."""


class VerificationError(SpiffeError):
    """A peer's certificate chain or token did not verify.

    Attributes:
        reason: a VerifyFailure, usable as a metric label.
        detail: human detail (which check, which trust domain).
    """

    def __init__(self, reason: "VerifyFailure", detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}")


class VerifyFailure(enum.Enum):
    """Why a peer X.509-SVID (or JWT-SVID) was rejected."""

    NO_CERTIFICATE = "no_certificate"
    BAD_CERTIFICATE = "bad_certificate"
    NO_URI_SAN = "no_uri_san"
    MULTIPLE_URI_SANS = "multiple_uri_sans"
    INVALID_SPIFFE_ID = "invalid_spiffe_id"
    ROOT_PATH = "root_path"
    LEAF_IS_CA = "leaf_is_ca"
    BAD_KEY_USAGE = "bad_key_usage"
    BAD_EXTENDED_KEY_USAGE = "bad_extended_key_usage"
    UNKNOWN_TRUST_DOMAIN = "unknown_trust_domain"
    WEAK_KEY = "weak_key"
    WEAK_SIGNATURE = "weak_signature"
    UNTRUSTED_CHAIN = "untrusted_chain"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    BAD_TOKEN = "bad_token"


# --- Configuration ----------------------------------------------------------


class ConfigError(SidecarError):
    """A configuration or policy file is invalid.

    Attributes:
        file: path of the file (or "<string>").
        line: 1-based line number, or None when unknown.
        field: dotted path of the offending field (e.g. "inbound[0].listen").
        detail: what is wrong and what is expected.
    """

    def __init__(self, file: str, line: int | None, field: str, detail: str) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.detail = detail
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {field}: {detail}" if field else f"{where}: {detail}")


# --- Workload API -------------------------------------------------------------


class WorkloadApiError(SidecarError):
    """A Workload API call failed.

    Attributes:
        code: the gRPC status code name (e.g. "PERMISSION_DENIED").
        message: the grpc-message sent by the server, if any.
    """

    def __init__(self, code: str, message: str = "") -> None:
        self.code = code
        self.message = message
        super().__init__(f"Workload API {code}: {message}" if message else f"Workload API {code}")


class NoIdentityError(SidecarError):
    """No X.509-SVID is available (yet, or any more): fail closed."""


class AttestationError(SidecarError):
    """The agent could not attest a caller (process gone, /proc unreadable...)."""


# --- Data plane ---------------------------------------------------------------


class TlsError(SidecarError):
    """A TLS operation failed.

    Attributes:
        reason: a HandshakeFailure value.
        detail: OpenSSL's error string or our own explanation.
    """

    def __init__(self, reason: "HandshakeFailure", detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"TLS {reason.value}: {detail}")


class HandshakeFailure(enum.Enum):
    """Why a TLS handshake did not complete (metric label)."""

    TIMEOUT = "timeout"
    PEER_CLOSED = "peer_closed"
    NOT_TLS = "not_tls"
    PROTOCOL = "protocol"
    VERIFY = "verify"
    NO_CLIENT_CERT = "no_client_cert"
    INTERNAL = "internal"


class DenyReason(enum.Enum):
    """Why the policy refused a peer (metric label)."""

    NO_POLICY = "no_policy"
    NO_MATCHING_RULE = "no_matching_rule"
    DENY_RULE = "deny_rule"
    UNEXPECTED_PEER = "unexpected_peer"


class Verdict(enum.Enum):
    """What the policy (inbound) or the expected peer (outbound) decided for a connection (metric label)."""

    ALLOW = "allow"
    DENY = "deny"


#: The machine-readable why of a refusal on a connection record (each value is a metric label).
RefusalReason = DenyReason | HandshakeFailure | VerifyFailure


class AdmissionRefusal(enum.Enum):
    """Why an inbound connection was closed at accept, before any handshake (metric label)."""

    PENDING_HANDSHAKES = "pending_handshakes"
    PENDING_HANDSHAKES_PER_SOURCE = "pending_handshakes_per_source"


class CloseReason(enum.Enum):
    """Why a connection ended (metric label)."""

    COMPLETED = "completed"
    HANDSHAKE_FAILED = "handshake_failed"
    VERIFY_FAILED = "verify_failed"
    DENIED = "denied"
    NO_ROUTE = "no_route"
    LOOP = "loop"
    UPSTREAM_CONNECT_FAILED = "upstream_connect_failed"
    IDLE_TIMEOUT = "idle_timeout"
    PEER_CERT_EXPIRED = "peer_cert_expired"
    REAUTH_FAILED = "reauth_failed"  # post-handshake re-authentication of a live peer failed (issue 11.2)
    MAX_LIFETIME = "max_lifetime"
    RESET = "reset"
    NOT_READY = "not_ready"
    OVERLOADED = "overloaded"
    DRAINED = "drained"
    INTERNAL = "internal"
    NOT_HTTP = "not_http"  # a protocol: http listener's connection did not speak HTTP


class UpstreamError(SidecarError):
    """Connecting to or talking with the upstream (app or remote sidecar) failed."""


class ListenError(SidecarError, OSError):
    """A listener (or the admin endpoint) cannot listen on its address.

    Also an OSError, so start-up's clean-up of the sockets bound so far sees it.

    Attributes:
        listener: the listener's name from sidecar.yaml ("admin" for the admin endpoint).
        address: the host:port it was given.
        cause: the OSError the bind raised.
    """

    def __init__(self, listener: str, address: str, cause: OSError) -> None:
        self.listener = listener
        self.address = address
        self.cause = cause
        hint = _LISTEN_HINTS.get(cause.errno or 0, "")
        what = "the admin endpoint" if listener == "admin" else f"listener {listener!r}"
        super().__init__(cause.errno, f"{what} cannot listen on {address}: {cause.strerror or cause}{hint}")

    def __str__(self) -> str:
        return str(self.strerror)


_LISTEN_HINTS = {
    errno.EADDRINUSE: " (another process is bound there: ss -ltnp names it; or pick another port)",
    errno.EACCES: " (a port below 1024 needs root or CAP_NET_BIND_SERVICE)",
    errno.EADDRNOTAVAIL: " (no interface of this host has that address)",
}


class InterceptionError(SidecarError):
    """Transparent interception failed: bad iptables options, a failed iptables
    command, or a socket without an original destination.

    Attributes:
        command: the command line that failed (None when nothing was run).
        output: its stderr/stdout verbatim, so the user sees iptables' own words.
    """

    def __init__(self, detail: str, command: str | None = None, output: str = "") -> None:
        self.detail = detail
        self.command = command
        self.output = output
        text = detail if command is None else f"{detail}\n  command: {command}"
        super().__init__(text + (f"\n  iptables said: {output.strip()}" if output.strip() else ""))


class RequestRejection(enum.Enum):
    """Why an HTTP request was refused before or instead of the policy (metric label).

    ``bad_path`` and ``malformed`` answer 400 and close; ``head_too_large``
    431 (HTTP/1.1 closes); ``not_http`` closes a connection that does not
    speak HTTP on a ``protocol: http`` listener.
    """

    BAD_PATH = "bad_path"
    MALFORMED = "malformed"
    HEAD_TOO_LARGE = "head_too_large"
    NOT_HTTP = "not_http"
    UPSTREAM_FAILED = "upstream_failed"


class HttpRequestError(SidecarError):
    """A request the HTTP layer refuses (before any policy decision).

    Attributes:
        rejection: a RequestRejection (metric label).
        detail: what was wrong, for the access log (never sent to the client).
    """

    def __init__(self, rejection: RequestRejection, detail: str) -> None:
        self.rejection = rejection
        self.detail = detail
        super().__init__(f"{rejection.value}: {detail}")
