"""Every rule for untrusted values, once: URLs, hosts, ports, Juju and Kubernetes names, labels.

Whatever another charm publishes ends up in an nginx configuration, a Kubernetes object, a log line
or a status, so it is parsed here, strictly, before anything uses it; the rest of the library only
handles the parsed forms. A failed parse is a ``ValueError`` whose message shows the value safely;
readers turn it into a :class:`Problem`. See ``docs/reference/parsing.md`` for the rules and their
sources.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import ipaddress
import re
from typing import Literal

__all__ = [
    "APP_NAME_PATTERN",
    "HOSTNAME_PATTERN",
    "LABEL_KEY_RE",
    "LABEL_VALUE_RE",
    "MAX_PEM_CERTIFICATES",
    "MAX_URL_LENGTH",
    "MODEL_NAME_PATTERN",
    "UNIT_NAME_PATTERN",
    "GrpcAddress",
    "HttpUrl",
    "Problem",
    "check_backend_host",
    "is_app_name",
    "is_dns_name",
    "is_juju_owned_label",
    "is_model_name",
    "is_model_uuid",
    "is_valid_label_value",
    "log_text",
    "nameservers_from_resolv_conf",
    "parse_cluster_domain",
    "parse_grpc_address",
    "parse_host",
    "parse_http_url",
    "parse_path",
    "parse_pem_certificates",
    "parse_port",
    "parse_resolver",
    "parse_unit_name",
    "safe_label_value",
    "shorten",
    "show",
    "unit_fqdn",
    "unit_path_name",
    "validate_labels",
    "validate_mesh_labels",
]

MAX_URL_LENGTH = 2048
"""The longest URL (or ``host:port``) accepted from a relation."""
MAX_HOST_LENGTH = 253
"""A DNS name's limit (RFC 1035)."""
_MAX_SHOWN = 80
MAX_LOG_TEXT = 4000
"""The longest log line the library hands to ``juju-log``; longer ones are cut."""
_MAX_LABEL_VALUE = 63
_HASH_CHARS = 10

# --- Juju names -------------------------------------------------------------------------------
# Juju's own rules (github.com/juju/names: ApplicationSnippet, NumberSnippet): an application (and
# a charm) name is lower-case segments joined by "-", starting with a letter, each later segment
# holding a letter ("app-1" and "my-charm-" are not names); a unit is "<application>/<number>".
_APP_SNIPPET = r"[a-z][a-z0-9]*(?:-[a-z0-9]*[a-z][a-z0-9]*)*"
_NUMBER_SNIPPET = r"(?:0|[1-9][0-9]*)"
APP_NAME_PATTERN = rf"^{_APP_SNIPPET}$"
"""A Juju application or charm name, as a pydantic ``pattern``."""
UNIT_NAME_PATTERN = rf"^{_APP_SNIPPET}/{_NUMBER_SNIPPET}$"
"""A Juju unit name, as a pydantic ``pattern``."""
_APP_NAME_RE = re.compile(_APP_SNIPPET)
_UNIT_NAME_RE = re.compile(rf"{_APP_SNIPPET}/{_NUMBER_SNIPPET}")
# Juju model names may start with a digit ("2024-prod"); on Kubernetes the model is a namespace,
# so also a DNS label (at most 63 characters, no trailing "-").
_MODEL_NAME = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_MODEL_NAME_RE = re.compile(_MODEL_NAME)
MODEL_NAME_PATTERN = rf"^{_MODEL_NAME}$"
"""A Juju model name that is also a Kubernetes namespace, as a pydantic ``pattern``."""
_MODEL_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MAX_NAME_LENGTH = 63
"""Application names become Kubernetes object and label values: at most 63 characters."""

# --- DNS names and Kubernetes labels ------------------------------------------------------------
_DNS_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME_RE = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
HOSTNAME_PATTERN = rf"(?i)^{_DNS_LABEL}(?:\.{_DNS_LABEL})*$"
"""A DNS name (any case; :func:`parse_host` lower-cases it), as a pydantic ``pattern``."""
# Kubernetes label keys: an optional DNS-subdomain prefix (at most 253 characters) and a name of at
# most 63 characters; values are empty or such a name. ``\Z``, not ``$``: ``$`` also matches
# before a trailing newline, and "ambient\n" is not a label value.
# The prefix is checked as Kubernetes' IsDNS1123Subdomain does (k8s.io/apimachinery validation):
# the total length and the character pattern, with no per-label bound.
_LABEL_NAME = r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?"
_SUBDOMAIN_PART = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?"
_LABEL_PREFIX = rf"(?=[^/]{{1,253}}/){_SUBDOMAIN_PART}(\.{_SUBDOMAIN_PART})*"
LABEL_KEY_RE = re.compile(rf"^({_LABEL_PREFIX}/)?{_LABEL_NAME}\Z")
LABEL_VALUE_RE = re.compile(rf"^({_LABEL_NAME})?\Z")
_INVALID_LABEL_CHARS_RE = re.compile(r"[^A-Za-z0-9_.-]+")

# --- URLs ---------------------------------------------------------------------------------------
_IPV4_LIKE_RE = re.compile(r"[0-9.]+")
_PATH_RE = re.compile(r"(?:/[A-Za-z0-9._~-]*)*")
_HTTP_URL_RE = re.compile(
    r"(?P<scheme>https?)://(?P<host>[A-Za-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?(?P<path>/[^?#]*)?"
)
_GRPC_ADDRESS_RE = re.compile(r"(?P<host>[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})")


# --- Display ------------------------------------------------------------------------------------


def show(value: object) -> str:
    """A short, printable rendering of an untrusted value (its ``repr``), for logs and statuses."""
    text = repr(value)
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _printable(text: str) -> str:
    # str.isprintable is false for the categories Cc (control: NUL, ESC), Cf (format: the bidi
    # overrides U+202A..U+202E and U+2066..U+2069, zero-width joiners), Cs (lone surrogates,
    # which cannot be encoded for a command line), Co, Cn and the separators but " ".
    return "".join(c if c.isprintable() else "?" for c in text)


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def shorten(text: str, limit: int = 120) -> str:
    """``text`` on one line, without control or format characters, at most ``limit`` characters.

    What goes to a status or an action result passes through here: Juju's hook tools receive it
    as a command-line argument, which cannot hold NUL (``docs/reference/parsing.md``).
    """
    return _bounded(_printable(" ".join(str(text).split())), limit)


def log_text(text: str, limit: int = MAX_LOG_TEXT) -> str:
    """``text`` safe for ``juju-log``: like :func:`shorten`, but line breaks are kept."""
    lines = str(text).replace("\r\n", "\n").split("\n")
    return _bounded("\n".join(_printable(line) for line in lines), limit)


@dataclasses.dataclass(frozen=True, order=True)
class Problem:
    """An input that was dropped, and why; the rest keeps working.

    Attributes:
        endpoint: the relation endpoint the item came from (``"logging"``), or ``""`` for the
            charm's own inputs (the DNS resolvers).
        item: which item (a unit name, a protocol, a databag key), shown safely.
        reason: why it was dropped.
    """

    endpoint: str
    item: str
    reason: str

    def __post_init__(self) -> None:
        # Every problem ends up in a status or a log line: whoever built it, its text is safe.
        object.__setattr__(self, "endpoint", shorten(self.endpoint, _MAX_SHOWN))
        object.__setattr__(self, "item", shorten(self.item, _MAX_SHOWN))
        object.__setattr__(self, "reason", shorten(self.reason, 300))

    @classmethod
    def of(cls, endpoint: str, item: object, reason: str) -> Problem:
        """A problem whose ``item`` is shown as is when short and printable, else with :func:`show`."""
        if isinstance(item, str) and len(item) <= _MAX_SHOWN and item.isprintable():
            return cls(endpoint, item, reason)
        return cls(endpoint, show(item), reason)

    def __str__(self) -> str:
        where = f"{self.endpoint}: " if self.endpoint else ""
        return f"{where}{self.item}: {self.reason}"


# --- Juju names ---------------------------------------------------------------------------------


def is_app_name(value: object) -> bool:
    """Whether ``value`` is a Juju application (or charm) name of at most 63 characters."""
    return (
        isinstance(value, str)
        and len(value) <= MAX_NAME_LENGTH
        and _APP_NAME_RE.fullmatch(value) is not None
    )


def is_model_name(value: object) -> bool:
    """Whether ``value`` is a Juju model name that is also a Kubernetes namespace."""
    return isinstance(value, str) and _MODEL_NAME_RE.fullmatch(value) is not None


def is_model_uuid(value: object) -> bool:
    """Whether ``value`` is a Juju model UUID (lower-case hex)."""
    return isinstance(value, str) and _MODEL_UUID_RE.fullmatch(value) is not None


def parse_unit_name(raw: object) -> str:
    """Check an untrusted Juju unit name (``app/N``).

    Raises:
        ValueError: not a unit name.
    """
    if (
        not isinstance(raw, str)
        or len(raw) > MAX_NAME_LENGTH + 11
        or not _UNIT_NAME_RE.fullmatch(raw)
        or not is_app_name(raw.split("/")[0])
    ):
        raise ValueError(f"{show(raw)} is not a Juju unit name")
    return raw


def unit_path_name(unit: str) -> str:
    """The form of a unit name in pod names, proxy paths and job names: ``loki/0`` -> ``loki-0``.

    Unambiguous, because unit numbers hold no ``-``.
    """
    return unit.replace("/", "-")


def unit_fqdn(unit_name: str, *, app_name: str, model_name: str, cluster_domain: str) -> str:
    """The stable DNS name of a Juju unit's pod on Kubernetes.

    For example ``worker-0.worker-endpoints.mymodel.svc.cluster.local`` for ``worker/0``: Juju
    gives every application a headless Service ``<app>-endpoints``.
    """
    return f"{unit_path_name(unit_name)}.{app_name}-endpoints.{model_name}.svc.{cluster_domain}"


# --- Hosts, ports, paths, URLs ------------------------------------------------------------------


def parse_cluster_domain(raw: object) -> str:
    """Check a Kubernetes cluster DNS domain (``cluster.local``), a charm's own setting.

    Raises:
        ValueError: not a lower-case DNS name.
    """
    if not is_dns_name(raw):
        raise ValueError(f"invalid cluster domain: {raw!r}")
    return str(raw)


def is_dns_name(value: object) -> bool:
    """Whether ``value`` is a lower-case DNS name (a cluster domain, a host)."""
    return (
        isinstance(value, str)
        and len(value) <= MAX_HOST_LENGTH
        and _HOSTNAME_RE.fullmatch(value) is not None
    )


def parse_host(host: object) -> str:
    """Parse an untrusted host: a DNS name (lower-cased) or an IPv4 address.

    Raises:
        ValueError: neither.
    """
    if not isinstance(host, str):
        raise ValueError(f"expected a host name, got {type(host).__name__}")
    host = host.lower()
    if len(host) > MAX_HOST_LENGTH:
        raise ValueError(f"host name longer than {MAX_HOST_LENGTH} characters")
    if _IPV4_LIKE_RE.fullmatch(host):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise ValueError(f"{show(host)} is not a valid IPv4 address") from None
    if not _HOSTNAME_RE.fullmatch(host):
        raise ValueError(f"{show(host)} is not a DNS name or an IPv4 address")
    return host


# Names a backend may never have. RFC 6761 reserves "localhost" and every name under it for
# loopback; "kubernetes.default..." is the cluster's API server Service in every cluster
# (kubernetes.io/docs/tasks/run-application/access-api-from-pod); metadata.google.internal is
# the GCE/GKE metadata server (169.254.169.254).
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")  # RFC 1122 "this network": 0.0.0.0 is us
_FORBIDDEN_HOSTS = frozenset({"localhost", "kubernetes", "metadata", "metadata.google.internal"})


def check_backend_host(
    host: str, *, app_name: str, model_name: str, cluster_domain: str = "cluster.local"
) -> str:
    """Check that a parsed host (:func:`parse_host`) may be a telemetry backend of a proxy.

    Refused: loopback, link-local (``169.254.0.0/16``: cloud metadata), unspecified, multicast
    and reserved addresses; ``localhost`` and names under it; the Kubernetes API server's names
    (``kubernetes``, ``kubernetes.default*``); and the proxy itself, application ``app_name`` in
    ``model_name``: its Service and headless Service in any of their DNS forms, and every unit
    FQDN. Forwarding to any of these would loop, or fetch what a related charm must never reach.

    Raises:
        ValueError: the host is refused; the message says why.
    """
    if _IPV4_LIKE_RE.fullmatch(host):
        address = ipaddress.IPv4Address(host)
        for refused, what in (
            (address.is_loopback, "a loopback address"),
            (address.is_link_local, "a link-local address"),
            (address in _THIS_NETWORK, "an unspecified address"),
            (address.is_multicast, "a multicast address"),
            (address.is_reserved, "a reserved address"),
        ):
            if refused:
                raise ValueError(f"backend {host} refused: {what}")
        return host
    if host in _FORBIDDEN_HOSTS or host.endswith(".localhost"):
        raise ValueError(f"backend {show(host)} refused: a loopback or metadata name")
    if host.startswith("kubernetes.default"):
        raise ValueError(f"backend {show(host)} refused: the Kubernetes API server")
    own = (app_name, f"{app_name}-endpoints")
    for service in own:
        names = {service, f"{service}.{model_name}", f"{service}.{model_name}.svc"}
        names.add(f"{service}.{model_name}.svc.{cluster_domain}")
        if host in names or any(host.endswith("." + name) for name in names if "." in name):
            raise ValueError(f"backend {show(host)} refused: it is this proxy ({app_name})")
    return host


def parse_port(port: object) -> int:
    """Parse an untrusted TCP port: an integer or decimal string in 1..65535 (not a bool).

    Raises:
        ValueError: not a port.
    """
    if isinstance(port, bool) or not isinstance(port, int | str):
        raise ValueError(f"expected a port number, got {type(port).__name__}")
    if isinstance(port, str) and not (port.isascii() and port.isdigit() and len(port) <= 5):
        raise ValueError(f"port {show(port)} is not a number")
    value = int(port)
    if not 1 <= value <= 65535:
        raise ValueError(f"port {value} is not in 1..65535")
    return value


def parse_path(path: object) -> str:
    """Parse an untrusted URL path: ``""`` or ``/`` segments of ``[A-Za-z0-9._~-]``, no dot-segments.

    Raises:
        ValueError: anything else.
    """
    if not isinstance(path, str) or len(path) > MAX_URL_LENGTH:
        raise ValueError(f"{show(path)} is not a URL path")
    if not _PATH_RE.fullmatch(path):
        raise ValueError(
            f"path {show(path)} has characters other than letters, digits, '/', '.', '_', '~', '-'"
        )
    segments = path.split("/")
    if "." in segments or ".." in segments:
        raise ValueError(f"path {show(path)} has '.' or '..' segments")
    return path


@dataclasses.dataclass(frozen=True, order=True)
class HttpUrl:
    """A strictly parsed HTTP(S) URL, safe to write into an nginx configuration.

    Attributes:
        scheme: ``http`` or ``https``.
        host: a lower-case DNS name or an IPv4 address.
        port: the port (the scheme's default when the URL has none).
        path: ``""`` or a path starting with ``/``.
    """

    scheme: Literal["http", "https"]
    host: str
    port: int
    path: str

    @property
    def origin(self) -> str:
        """``scheme://host:port``, without the path."""
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def is_ip(self) -> bool:
        """Whether the host is an IP address (no DNS resolution needed)."""
        return _IPV4_LIKE_RE.fullmatch(self.host) is not None

    def __str__(self) -> str:
        return self.origin + self.path


def parse_http_url(raw: object) -> HttpUrl:
    """Parse an untrusted HTTP(S) URL strictly.

    Accepted: ``http`` or ``https`` (lower case), a DNS name or IPv4 host, an optional decimal port,
    an optional path of ``[A-Za-z0-9._~-]`` segments without ``.``/``..``. Rejected: anything else,
    including user info, queries, fragments, IPv6 literals, whitespace and URLs over 2048 characters.

    Raises:
        ValueError: the URL is not acceptable; the message says why (with the value shown safely).
    """
    if not isinstance(raw, str):
        raise ValueError(f"expected a URL string, got {type(raw).__name__}")
    if len(raw) > MAX_URL_LENGTH:
        raise ValueError(f"URL is {len(raw)} characters, more than {MAX_URL_LENGTH}")
    match = _HTTP_URL_RE.fullmatch(raw)
    if match is None:
        raise ValueError(f"{show(raw)} is not an http(s)://host[:port][/path] URL")
    scheme: Literal["http", "https"] = "https" if match["scheme"] == "https" else "http"
    host = parse_host(match["host"])
    port = parse_port(match["port"]) if match["port"] else (443 if scheme == "https" else 80)
    path = parse_path(match["path"] or "")
    return HttpUrl(scheme=scheme, host=host, port=port, path=path)


@dataclasses.dataclass(frozen=True, order=True)
class GrpcAddress:
    """A strictly parsed gRPC ``host:port`` (no scheme), safe for an nginx configuration."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_grpc_address(raw: object) -> GrpcAddress:
    """Parse an untrusted gRPC address ``host:port`` (no scheme, as tracing providers publish).

    Raises:
        ValueError: not a DNS name or IPv4 address followed by ``:`` and a port.
    """
    if not isinstance(raw, str):
        raise ValueError(f"expected a host:port string, got {type(raw).__name__}")
    if len(raw) > MAX_URL_LENGTH:
        raise ValueError(f"address is {len(raw)} characters, more than {MAX_URL_LENGTH}")
    match = _GRPC_ADDRESS_RE.fullmatch(raw)
    if match is None:
        raise ValueError(f"{show(raw)} is not a host:port gRPC address")
    return GrpcAddress(host=parse_host(match["host"]), port=parse_port(match["port"]))


def parse_resolver(raw: object) -> str:
    """Parse a DNS resolver address into the form nginx's ``resolver`` directive takes.

    Accepts an IPv4 or IPv6 address, optionally with a port (``10.0.0.10``, ``10.0.0.10:53``,
    ``fd00::10``, ``[fd00::10]:53``). IPv6 addresses come back bracketed.

    Raises:
        ValueError: not an IP address (with optional port). Zone ids (``%eth0``) are rejected.
    """
    if not isinstance(raw, str) or len(raw) > 64:
        raise ValueError(f"{show(raw)} is not a resolver IP address")
    text = raw.strip()
    port = ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{show(raw)} is not a resolver IP address")
        port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host = text
    try:
        if "%" in host:
            raise ValueError("scoped address")
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{show(raw)} is not a resolver IP address") from None
    if port and (not port.isdigit() or not 1 <= int(port) <= 65535):
        raise ValueError(f"{show(raw)} has an invalid port")
    rendered = f"[{address}]" if address.version == 6 else str(address)
    return f"{rendered}:{int(port)}" if port else rendered


def nameservers_from_resolv_conf(text: str) -> list[str]:
    """The ``nameserver`` addresses of a ``resolv.conf`` text, in file order (unparsed)."""
    servers: list[str] = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            servers.append(fields[1])
    return servers


# --- Kubernetes labels --------------------------------------------------------------------------


def validate_labels(labels: dict[str, str]) -> dict[str, str]:
    """Check that every key and value is a valid Kubernetes label key and value.

    Returns:
        ``labels`` itself, so this can serve as a pydantic validator.

    Raises:
        ValueError: naming the first invalid key or value.
    """
    for key, value in labels.items():
        if not LABEL_KEY_RE.fullmatch(key):
            raise ValueError(f"{key!r} is not a valid Kubernetes label key")
        if not LABEL_VALUE_RE.fullmatch(value):
            raise ValueError(f"{value!r} (label {key!r}) is not a valid Kubernetes label value")
    return labels


# Juju labels every application's StatefulSet, pods and Service with these, and selects its pods
# by app.kubernetes.io/name (juju/juju internal/provider/kubernetes/utils: LabelKubernetesAppName,
# LabelKubernetesAppManaged); keys under the juju.is domain are Juju's own ("model.juju.is/name").
_JUJU_OWNED_KEYS = frozenset({"app.kubernetes.io/name", "app.kubernetes.io/managed-by"})


def is_juju_owned_label(key: str) -> bool:
    """Whether a label key is Juju's: its selector, ``managed-by`` or any ``juju.is`` key."""
    prefix = key.split("/", 1)[0] if "/" in key else ""
    return key in _JUJU_OWNED_KEYS or prefix == "juju.is" or prefix.endswith(".juju.is")


def validate_mesh_labels(labels: dict[str, str]) -> dict[str, str]:
    """:func:`validate_labels`, and no key Juju owns (:func:`is_juju_owned_label`).

    Labels another charm asks us to put on pods (the beacon's, the coordinator's) may never
    take over one of Juju's: a pod template whose selector label changes is rejected (422) on
    every hook, and ``managed-by`` tells tools who owns the object.

    Raises:
        ValueError: naming the first invalid or Juju-owned key.
    """
    for key in sorted(labels):
        if is_juju_owned_label(key):
            what = " (its pod selector)" if key == "app.kubernetes.io/name" else ""
            raise ValueError(f"{show(key)} is a label Juju owns{what}")
    return validate_labels(labels)


def is_valid_label_value(value: str) -> bool:
    """Whether ``value`` is a valid Kubernetes label value (at most 63 characters)."""
    return LABEL_VALUE_RE.fullmatch(value) is not None


def safe_label_value(value: str) -> str:
    """``value`` if it is a valid label value, else a deterministic valid stand-in of <= 63 chars.

    Valid values are returned unchanged. Others (too long, or with characters a label value cannot
    hold) become a readable, sanitised head followed by ``-`` and a short SHA-256 digest of the
    whole original, so two different inputs do not map to the same value in practice, and the
    same input always maps to the same value, in every Python and library version.
    """
    if is_valid_label_value(value):
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    head = _INVALID_LABEL_CHARS_RE.sub("-", value)[: _MAX_LABEL_VALUE - _HASH_CHARS - 1]
    head = head.strip("-_.")
    return f"{head}-{digest}" if head else digest


MAX_PEM_CERTIFICATES = 16
"""The most certificates one PEM bundle from another charm may hold (a CA and its chain)."""
_MAX_PEM_BASE64 = 16 * 1024
"""The longest base64 body of one certificate (a 16 KiB DER certificate is far beyond any CA's)."""
_PEM_BLOCK_RE = re.compile(
    r"-----BEGIN CERTIFICATE-----\s*\n(?P<body>[A-Za-z0-9+/=\s]+?)\n?-----END CERTIFICATE-----"
)
_PEM_OUTSIDE_RE = re.compile(r"\s*")


def parse_pem_certificates(raw: object) -> str:
    """A bundle of PEM certificates (RFC 7468 ``CERTIFICATE`` blocks), in a canonical form.

    Only ``CERTIFICATE`` blocks and whitespace are accepted (no private key, no other text), at
    most :data:`MAX_PEM_CERTIFICATES` of them, each body valid base64. The result re-wraps every
    body at 64 characters, one block after another, ending in a newline: equal certificates give
    equal text however they were published. This checks the form, not the content: nginx and
    OpenSSL parse the DER (a malformed one fails their check, not a hook).

    Raises:
        ValueError: the text is not such a bundle.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"{show(raw)} is not a PEM certificate")
    blocks: list[str] = []
    position = 0
    for match in _PEM_BLOCK_RE.finditer(raw):
        if not _PEM_OUTSIDE_RE.fullmatch(raw, position, match.start()):
            raise ValueError("a PEM bundle holds only CERTIFICATE blocks")
        position = match.end()
        body = "".join(match.group("body").split())
        if len(body) > _MAX_PEM_BASE64:
            raise ValueError("a certificate in the PEM bundle is too large")
        try:
            der = base64.b64decode(body, validate=True)
        except binascii.Error:
            raise ValueError("a certificate in the PEM bundle is not valid base64") from None
        if not der:
            raise ValueError("a certificate in the PEM bundle is empty")
        lines = [body[i : i + 64] for i in range(0, len(body), 64)]
        blocks.append(
            "\n".join(["-----BEGIN CERTIFICATE-----", *lines, "-----END CERTIFICATE-----"])
        )
        if len(blocks) > MAX_PEM_CERTIFICATES:
            raise ValueError(f"a PEM bundle holds at most {MAX_PEM_CERTIFICATES} certificates")
    if not blocks or not _PEM_OUTSIDE_RE.fullmatch(raw, position):
        raise ValueError("a PEM bundle holds only CERTIFICATE blocks")
    return "\n".join(blocks) + "\n"
