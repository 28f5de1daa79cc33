"""Webhook URL checks (app/core/webhook_urls.py): the form of a URL, and every class of address or name
a webhook may not reach, as an IP literal and behind a name. DNS is a fake (tests/support): names resolve
where the test says, and a lookup that should not happen fails the test."""

from __future__ import annotations

import ipaddress

import pytest

from app.core.webhook_urls import (
    CredentialsInUrl,
    ForbiddenAddress,
    HttpsRequired,
    MalformedUrl,
    MissingHost,
    UnresolvableHost,
    UnsupportedScheme,
    WebhookUrlError,
    check_url,
    parse_webhook_url,
    resolve_public,
)
from tests.support.webhook_receiver import FakeDns

PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"


@pytest.fixture
def dns(monkeypatch) -> FakeDns:
    return FakeDns(monkeypatch)


def check(url: str, *, allow_private: bool = False, require_https: bool = True) -> str:
    return check_url(url, allow_private=allow_private, require_https=require_https)


# --- Form ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("HTTPS://Hooks.Example.COM:443/In?x=1#frag", "https://hooks.example.com/In?x=1"),
        ("https://hooks.example.com", "https://hooks.example.com/"),
        ("  https://hooks.example.com:8443/a  ", "https://hooks.example.com:8443/a"),
        ("http://hooks.example.com:80/a", "http://hooks.example.com/a"),
        ("https://bücher.example/x", "https://xn--bcher-kva.example/x"),
        (f"https://{PUBLIC_V4}/x", f"https://{PUBLIC_V4}/x"),
        (f"https://[{PUBLIC_V6.upper()}]:8443/x", f"https://[{PUBLIC_V6}]:8443/x"),
    ],
)
def test_a_public_url_is_accepted_and_normalized(dns, url, normalized):
    dns.answer("hooks.example.com", [PUBLIC_V4, PUBLIC_V6])
    dns.answer("xn--bcher-kva.example", [PUBLIC_V4])
    assert check(url, require_https=False) == normalized


@pytest.mark.parametrize(
    "url", ["ftp://hooks.example.com/", "javascript:alert(1)", "hooks.example.com/in", "file:///etc/passwd"]
)
def test_only_http_and_https(dns, url):
    with pytest.raises(UnsupportedScheme, match="https://"):
        check(url, require_https=False)


def test_https_is_required_in_production_only(dns):
    dns.answer("hooks.example.com", [PUBLIC_V4])
    with pytest.raises(HttpsRequired, match="https"):
        check("http://hooks.example.com/in", require_https=True)
    assert check("http://hooks.example.com/in", require_https=False) == "http://hooks.example.com/in"


@pytest.mark.parametrize(
    "url",
    [
        "https://user:hunter2@hooks.example.com/",
        "https://user@hooks.example.com/",
        "https://:hunter2@hooks.example.com/",
        "https://hooks.example.com@evil.example/",
    ],
)
def test_credentials_in_the_url_are_refused_without_being_repeated(dns, url):
    with pytest.raises(CredentialsInUrl) as refused:
        check(url)
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize("url", ["https:///in", "https://:443/in", "https://?x", "https://"])
def test_a_url_without_a_host(dns, url):
    with pytest.raises(MissingHost, match="no host"):
        check(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com:0/",
        "https://hooks.example.com:65536/",
        "https://hooks.example.com:https/",
        "https://hooks example.com/",
        "https://hooks.example.com/a b",
        "https://hooks.example.com\\@evil.example/",
        "https://hooks.example.com/\nHost: evil",
        "https://[fe80::1%25eth0]/",
        "https://[::1/",
        "https://hooks!.example.com/",
        "",
    ],
)
def test_malformed_urls(dns, url):
    with pytest.raises(MalformedUrl):
        check(url)


@pytest.mark.parametrize(
    "host", ["127.1", "2130706433", "0x7f000001", "0x7f.0.0.1", "017700000001", "10.1", "1.2.3.4.5"]
)
def test_ipv4_in_shorthand_notations_is_refused_before_any_lookup(dns, host):
    # getaddrinfo (inet_aton) would read every one of these as an address: 127.0.0.1, 10.0.0.1...
    with pytest.raises(MalformedUrl, match="standard notation"):
        check(f"https://{host}/")
    assert dns.lookups == []


def test_every_refusal_is_a_value_error():
    for error in (MalformedUrl, UnsupportedScheme, HttpsRequired, CredentialsInUrl, MissingHost):
        assert issubclass(error, WebhookUrlError)
    assert issubclass(ForbiddenAddress, ValueError)
    assert issubclass(UnresolvableHost, ValueError)


def test_parse_does_not_resolve(dns):
    target = parse_webhook_url("https://Hooks.Example.com:8443/in", require_https=True)
    assert (target.scheme, target.host, target.port) == ("https", "hooks.example.com", 8443)
    assert dns.lookups == []


# --- Addresses ----------------------------------------------------------------------------------------

# (address, words of the reason): every class a webhook may not reach unless allow_private.
PRIVATE = [
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("::1", "loopback"),
    ("10.1.2.3", "RFC 1918"),
    ("172.16.0.1", "RFC 1918"),
    ("172.31.255.254", "RFC 1918"),
    ("192.168.1.1", "RFC 1918"),
    ("fc00::1", "unique local"),
    ("fd12:3456::1", "unique local"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("100.64.0.1", "shared address"),
    ("100.127.255.254", "shared address"),
    ("fec0::1", "site-local"),
    ("192.0.2.10", "special-purpose"),  # documentation
    ("198.18.0.1", "special-purpose"),  # benchmarking
    ("::ffff:127.0.0.1", "carrying 127.0.0.1, a loopback"),
    ("::ffff:10.0.0.1", "carrying 10.0.0.1, a private"),
    ("::ffff:169.254.1.1", "carrying 169.254.1.1, a link-local"),
    ("::ffff:100.64.0.1", "carrying 100.64.0.1, a shared"),
    ("2002:7f00:1::", "carrying 127.0.0.1"),  # 6to4
    ("64:ff9b::a00:1", "carrying 10.0.0.1"),  # NAT64
    ("::127.0.0.1", "carrying 127.0.0.1"),  # IPv4-compatible
]
# Refused even with allow_private: nothing there is a webhook receiver, and the metadata services hold
# the credentials of the machine we run on.
NEVER = [
    ("169.254.169.254", "metadata"),
    ("169.254.170.2", "metadata"),
    ("fd00:ec2::254", "metadata"),
    ("100.100.100.200", "metadata"),
    ("168.63.129.16", "metadata"),
    ("::ffff:169.254.169.254", "metadata"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("::", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
]


def url_of(address: str) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"https://{host}/in"


@pytest.mark.parametrize(("address", "reason"), PRIVATE + NEVER)
def test_forbidden_ip_literals_are_refused_without_a_lookup(dns, address, reason):
    with pytest.raises(ForbiddenAddress, match=reason) as refused:
        check(url_of(address))
    assert refused.value.address == str(ipaddress.ip_address(address))
    assert "public internet addresses" in str(refused.value)
    assert dns.lookups == []


@pytest.mark.parametrize(("address", "reason"), PRIVATE + NEVER)
def test_a_name_resolving_to_a_forbidden_address_is_refused(dns, address, reason):
    dns.answer("hooks.example.com", [address])
    with pytest.raises(ForbiddenAddress, match=reason) as refused:
        check("https://hooks.example.com/in")
    assert f"hooks.example.com resolves to {ipaddress.ip_address(address)}" in str(refused.value)


@pytest.mark.parametrize(("address", "reason"), PRIVATE)
def test_allow_private_lets_private_addresses_through(dns, address, reason):
    assert check(url_of(address), allow_private=True).startswith("https://")
    dns.answer("hooks.example.com", [address])
    assert check("https://hooks.example.com/in", allow_private=True) == "https://hooks.example.com/in"


@pytest.mark.parametrize(("address", "reason"), NEVER)
def test_allow_private_still_refuses_metadata_unspecified_multicast_reserved(dns, address, reason):
    with pytest.raises(ForbiddenAddress, match=reason):
        check(url_of(address), allow_private=True)
    dns.answer("hooks.example.com", [address])
    with pytest.raises(ForbiddenAddress, match=reason):
        check("https://hooks.example.com/in", allow_private=True)


@pytest.mark.parametrize("address", ["10.0.0.7", "169.254.169.254", "::1", "::ffff:192.168.0.1"])
def test_one_forbidden_answer_among_public_ones_refuses_the_name(dns, address):
    # A round-robin name with one inside address: a connection would reach it one time in N.
    dns.answer("hooks.example.com", [PUBLIC_V4, PUBLIC_V6, address])
    with pytest.raises(ForbiddenAddress, match=f"resolves to {ipaddress.ip_address(address)}"):
        check("https://hooks.example.com/in")


@pytest.mark.parametrize(
    "name",
    [
        "metadata.google.internal",
        "METADATA.GOOGLE.INTERNAL.",
        "metadata.goog",
        "metadata",
        "metadata.azure.com",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
    ],
)
@pytest.mark.parametrize("allow_private", [False, True])
def test_metadata_names_are_refused_by_name_before_any_lookup(dns, name, allow_private):
    dns.answer(name, [PUBLIC_V4])  # whatever DNS would say
    with pytest.raises(ForbiddenAddress, match="cloud metadata service"):
        check(f"http://{name}/computeMetadata/v1/", allow_private=allow_private, require_https=False)
    assert dns.lookups == []


@pytest.mark.parametrize("name", ["localhost", "LOCALHOST.", "api.localhost"])
def test_localhost_names_are_loopback_unless_allow_private(dns, name):
    dns.answer(name.lower().rstrip("."), ["127.0.0.1"])
    with pytest.raises(ForbiddenAddress, match="loopback"):
        check(f"https://{name}:8443/in")
    assert dns.lookups == []
    assert check(f"https://{name}:8443/in", allow_private=True).endswith(":8443/in")


def test_an_unresolvable_name_is_refused_at_registration(dns):
    with pytest.raises(UnresolvableHost, match=r"nowhere\.example\.com does not resolve"):
        check("https://nowhere.example.com/in")


def test_public_literals_are_accepted_without_a_lookup(dns):
    assert check(url_of(PUBLIC_V4)) == f"https://{PUBLIC_V4}/in"
    assert check(url_of(PUBLIC_V6)) == f"https://[{PUBLIC_V6}]/in"
    assert dns.lookups == []


# --- resolve_public -----------------------------------------------------------------------------------


def test_resolve_public_looks_up_once_and_returns_every_checked_address(dns):
    dns.answer("hooks.example.com", [PUBLIC_V6, PUBLIC_V4, PUBLIC_V4])
    addresses = resolve_public("hooks.example.com", 443, allow_private=False)
    assert addresses == [ipaddress.ip_address(PUBLIC_V6), ipaddress.ip_address(PUBLIC_V4)]
    assert dns.lookups == ["hooks.example.com"]


def test_resolve_public_sees_a_changed_answer(dns):
    # Registration-time checks are not enough: a name can point elsewhere by the time we send.
    dns.answer("hooks.example.com", [PUBLIC_V4], ["169.254.169.254"])
    assert resolve_public("hooks.example.com", 443, allow_private=False) == [ipaddress.ip_address(PUBLIC_V4)]
    with pytest.raises(ForbiddenAddress, match="metadata"):
        resolve_public("hooks.example.com", 443, allow_private=False)


def test_resolve_public_of_a_literal(dns):
    assert resolve_public("127.0.0.1", 80, allow_private=True) == [ipaddress.ip_address("127.0.0.1")]
    with pytest.raises(ForbiddenAddress, match="loopback"):
        resolve_public("127.0.0.1", 80, allow_private=False)
    assert dns.lookups == []
