"""Webhook endpoint URLs: what a workspace may register, and where the sender may connect (SSRF guard).

A webhook URL is typed by a customer and fetched by our servers, so it must not reach what only our
servers can reach: loopback, the private network, link-local addresses and, above all, the cloud metadata
service (instance credentials at 169.254.169.254 and friends). Two checks, one rule:

- `check_url(url, allow_private=..., require_https=...)` at registration: the URL is well formed, http(s)
  (https only when required), has no credentials, and its host is an allowed IP literal or a name every
  DNS answer of which (A and AAAA) is allowed. Returns the normalized URL to store.
- `resolve_public(host, port, allow_private=...)` at send time: resolve once, check every answer, and hand
  the checked addresses to the sender, which connects to one of them and never resolves the name again (a
  second lookup could answer something else: DNS rebinding). workers/pinned_http.py does the connecting.

`allow_private` (development, tests, a self-hosted install posting to its own network) lifts the refusal
of loopback, private, link-local, shared and other non-global unicast addresses. Some addresses are refused
even then, since no webhook receiver ever lives there: the cloud metadata addresses and names, the
unspecified address, multicast and the reserved 240.0.0.0/4 (broadcast included).

Every refusal is a `WebhookUrlError`, a ValueError whose message names the problem (and the host, never
the rest of the URL: a path or a query can hold the receiver's own secret token)."""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, quote, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_CHARS = 2048


class WebhookUrlError(ValueError):
    """A webhook URL that may not be used; the message says why."""


class MalformedUrl(WebhookUrlError):
    pass


class UnsupportedScheme(WebhookUrlError):
    pass


class HttpsRequired(WebhookUrlError):
    pass


class CredentialsInUrl(WebhookUrlError):
    pass


class MissingHost(WebhookUrlError):
    pass


class UnresolvableHost(WebhookUrlError):
    """The name has no address (now): refused at registration, a retry-able failure at send time."""


class ForbiddenAddress(WebhookUrlError):
    """The host is, or resolves to, an address webhooks may not reach."""

    def __init__(self, host: str, address: str | None, reason: str):
        self.host = host
        self.address = address  # None when the name itself is refused, before any lookup
        self.reason = reason
        if address is None or address == host:
            where = f"{host} is {reason}"
        else:
            where = f"{host} resolves to {address}, {reason}"
        super().__init__(f"{where}: webhooks may only target public internet addresses")


@dataclass(frozen=True)
class WebhookTarget:
    """A parsed, normalized webhook URL; `host` is lowercase ASCII (IDNA), without IPv6 brackets."""

    url: str
    scheme: str
    host: str
    port: int

    @property
    def path(self) -> str:
        """What the request line names: the path and the query (never a fragment), percent-encoded as
        browsers send them (UTF-8; escapes already there are kept): a request line is ASCII."""
        parts = urlsplit(self.url)
        path = quote(parts.path or "/", safe=_PATH_SAFE)
        return path + (f"?{quote(parts.query, safe=_QUERY_SAFE)}" if parts.query else "")


# RFC 3986 pchar and query characters besides the unreserved ones, with "%" (an existing escape).
_PATH_SAFE = "/%:@!$&'()*+,;="
_QUERY_SAFE = _PATH_SAFE + "?"


# --- Addresses ----------------------------------------------------------------------------------------

# Cloud metadata services, refused even with allow_private: the credentials of the machine we run on.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle, Hetzner...
        "169.254.170.2",  # AWS ECS task metadata and credentials
        "169.254.170.23",  # AWS EKS Pod Identity agent
        "169.254.0.23",  # Tencent Cloud
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer (a public address, reachable only from inside Azure)
        "192.0.0.192",  # Oracle Cloud (legacy)
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::23",  # AWS EKS Pod Identity agent over IPv6
    )
)
METADATA_HOSTNAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.com",
        "metadata.azure.internal",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "metadata.platformequinix.com",
    }
)

_ALWAYS_REFUSED: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "the unspecified address ('this network')"),
    ("::/128", "the unspecified address"),
    ("224.0.0.0/4", "a multicast address"),
    ("ff00::/8", "a multicast address"),
    ("240.0.0.0/4", "a reserved address (240.0.0.0/4, broadcast included)"),
)
_PRIVATE: tuple[tuple[str, str], ...] = (
    ("127.0.0.0/8", "a loopback address"),
    ("::1/128", "a loopback address"),
    ("10.0.0.0/8", "a private address (RFC 1918)"),
    ("172.16.0.0/12", "a private address (RFC 1918)"),
    ("192.168.0.0/16", "a private address (RFC 1918)"),
    ("fc00::/7", "a private address (unique local, fc00::/7)"),
    ("169.254.0.0/16", "a link-local address"),
    ("fe80::/10", "a link-local address"),
    ("100.64.0.0/10", "a shared address (carrier-grade NAT, 100.64.0.0/10)"),
    ("fec0::/10", "a site-local address"),
)
ALWAYS_REFUSED_NETWORKS = tuple((ipaddress.ip_network(net), why) for net, why in _ALWAYS_REFUSED)
PRIVATE_NETWORKS = tuple((ipaddress.ip_network(net), why) for net, why in _PRIVATE)
# NAT64 (RFC 6052, 8215) and SIIT's IPv4-translated addresses (::ffff:0:a.b.c.d, RFC 7915): a translator
# on the path routes them to the IPv4 address in their last 32 bits.
NAT64_PREFIXES = (
    ipaddress.ip_network("64:ff9b::/96"),
    ipaddress.ip_network("64:ff9b:1::/48"),
    ipaddress.ip_network("::ffff:0:0:0/96"),
)


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and routes to, if any: IPv4-mapped (::ffff:a.b.c.d),
    IPv4-compatible (::a.b.c.d), 6to4 (2002::/16), NAT64 (64:ff9b::/96, 64:ff9b:1::/48) or IPv4-translated
    (::ffff:0:a.b.c.d)."""
    if address.version == 4:
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if int(address) >> 32 == 0 and int(address) > 1:  # ::a.b.c.d (:: and ::1 are themselves)
        return low32
    if any(address in prefix for prefix in NAT64_PREFIXES):
        return low32
    return None


def address_problem(address: IPAddress, *, allow_private: bool) -> str | None:
    """Why webhooks may not reach `address` ("a loopback address"...), or None when they may."""
    carried = embedded_ipv4(address)
    if carried is not None:
        problem = address_problem(carried, allow_private=allow_private)
        return None if problem is None else f"an IPv6 address carrying {carried}, {problem}"
    address = ipaddress.ip_address(str(address).split("%")[0])  # the scope of fe80::1%eth0 aside
    if address in METADATA_ADDRESSES:
        return "a cloud metadata service address"
    for network, why in ALWAYS_REFUSED_NETWORKS:
        if address in network:
            return why
    if allow_private:
        return None
    for network, why in PRIVATE_NETWORKS:
        if address in network:
            return why
    if not address.is_global:  # documentation, benchmarking, Teredo, ORCHID... ranges: no receiver there
        return "a special-purpose address, not a public one"
    return None


# --- Host names ---------------------------------------------------------------------------------------

# A last label that is a number (127.1, 2130706433, 0x7f.1, 017700000001): C's inet_aton, and so
# getaddrinfo, reads such a "name" as an IPv4 address in a shorthand notation. No real host name ends so.
_NUMERIC_LAST_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)", re.IGNORECASE)
# Spaces, controls and backslashes: parsers disagree on them (a browser reads "\\" as "/"), and a URL
# that two parsers read as two hosts is how SSRF guards get bypassed.
_UNSAFE_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_HOST_NAME = re.compile(r"[a-z0-9_.-]+")


def host_name_problem(host: str, *, allow_private: bool) -> str | None:
    """Why the name itself is refused, before any lookup (metadata services, localhost), or None."""
    name = host.rstrip(".")
    if name in METADATA_HOSTNAMES:
        return "a cloud metadata service"
    if not allow_private and (name == "localhost" or name.endswith(".localhost")):
        return "a loopback name (localhost)"
    return None


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def ascii_host(host: str) -> str:
    """The host as it goes on the wire: lowercase, internationalized names in their IDNA (xn--) form."""
    host = host.lower()
    if host.isascii():
        return host
    import idna  # IDNA 2008 with UTS 46 mapping, as browsers encode

    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError as error:
        raise MalformedUrl(f"the host name is not a valid internationalized name ({error})") from None


# --- Parsing ------------------------------------------------------------------------------------------


def parse_webhook_url(url: str, *, require_https: bool) -> WebhookTarget:
    """Check the form of a webhook URL (no DNS) and normalize it: scheme and host lowercase, default port
    and fragment dropped, an empty path made "/"."""
    if not isinstance(url, str):
        raise MalformedUrl("the URL must be a string")
    url = url.strip()
    if not url:
        raise MalformedUrl("the URL is empty")
    if len(url) > MAX_URL_CHARS:
        raise MalformedUrl(f"the URL is longer than {MAX_URL_CHARS} characters")
    if _UNSAFE_URL_CHARS.search(url):
        raise MalformedUrl("the URL contains spaces, control characters or backslashes (percent-encode them)")
    try:
        parts = urlsplit(url)
    except ValueError as error:  # an unbalanced [ in the host, for one
        raise MalformedUrl(f"the URL cannot be parsed ({error})") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        shown = f", not {scheme}:" if scheme else ""
        raise UnsupportedScheme(f"the URL must start with https:// (or http://){shown}")
    if require_https and scheme != "https":
        raise HttpsRequired("the URL must use https:// (plain http is refused in production)")
    if "@" in parts.netloc:
        raise CredentialsInUrl(
            "the URL contains credentials (user:password@); webhooks are authenticated by their signature"
        )
    host = _host_of(parts)
    port = _port_of(parts, scheme)
    return WebhookTarget(_normalized(parts, scheme, host, port), scheme, host, port)


def _host_of(parts: SplitResult) -> str:
    if not parts.hostname:
        raise MissingHost("the URL has no host")
    host = ascii_host(parts.hostname)
    if "%" in host:
        raise MalformedUrl("the URL's IPv6 address has a zone (%...): not a routable address")
    if literal_address(host) is not None:
        return host
    if parts.netloc.startswith("[") or not _HOST_NAME.fullmatch(host):
        raise MalformedUrl(f"{host!r} is not a valid host name")
    last_label = host.rstrip(".").rsplit(".", 1)[-1]
    if _NUMERIC_LAST_LABEL.fullmatch(last_label):
        raise MalformedUrl(
            f"{host} is not a host name nor an IP address in standard notation (write a.b.c.d)"
        )
    return host


def _port_of(parts: SplitResult, scheme: str) -> int:
    try:
        port = parts.port
    except ValueError:
        raise MalformedUrl("the URL's port is not a number from 1 to 65535") from None
    if port == 0:
        raise MalformedUrl("the URL's port is not a number from 1 to 65535")
    return port or DEFAULT_PORTS[scheme]


def _normalized(parts: SplitResult, scheme: str, host: str, port: int) -> str:
    netloc = f"[{host}]" if ":" in host else host
    if port != DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{netloc}{parts.path or '/'}{query}"


# --- Checking -----------------------------------------------------------------------------------------


def resolve_public(host: str, port: int, *, allow_private: bool) -> list[IPAddress]:
    """The addresses to connect to for `host`, every one checked: an IP literal is checked as is; a name
    is refused by name (metadata, localhost) or resolved once (A and AAAA) and refused if ANY answer is
    forbidden (a name that points inside even once is not a receiver's). Connect only to what this returns.

    Raises ForbiddenAddress, or UnresolvableHost when the name has no address."""
    host = host.lower()
    literal = literal_address(host)
    if literal is not None:
        _check_address(host, literal, allow_private=allow_private)
        return [literal]
    problem = host_name_problem(host, allow_private=allow_private)
    if problem is not None:
        raise ForbiddenAddress(host, None, problem)
    addresses = _lookup(host, port)
    for address in addresses:
        _check_address(host, address, allow_private=allow_private)
    return addresses


def _check_address(host: str, address: IPAddress, *, allow_private: bool) -> None:
    problem = address_problem(address, allow_private=allow_private)
    if problem is not None:
        raise ForbiddenAddress(host, str(address), problem)


def _lookup(host: str, port: int) -> list[IPAddress]:
    """Every A and AAAA answer for `host`, in the resolver's order (RFC 6724), without duplicates."""
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:  # socket.gaierror is an OSError
        raise UnresolvableHost(f"{host} does not resolve to an address ({_short(error)})") from None
    addresses: list[IPAddress] = []
    for family, _type, _proto, _canonname, sockaddr in answers:
        if family in (socket.AF_INET, socket.AF_INET6):
            address = ipaddress.ip_address(sockaddr[0])
            if address not in addresses:
                addresses.append(address)
    if not addresses:
        raise UnresolvableHost(f"{host} has no IPv4 or IPv6 address")
    return addresses


def _short(error: BaseException) -> str:
    return (str(error) or type(error).__name__)[:120]


def check_url(url: str, *, allow_private: bool, require_https: bool) -> str:
    """The normalized form of a webhook URL a workspace may register; raises a WebhookUrlError (a
    ValueError) naming the problem otherwise. Resolves the host now (an unresolvable name is refused: a
    typo is likelier than a receiver not set up yet), but the sender checks again at every send
    (`resolve_public`): DNS answers change."""
    target = parse_webhook_url(url, require_https=require_https)
    resolve_public(target.host, target.port, allow_private=allow_private)
    return target.url
