import base64
import re
import uuid

import pytest

from app.core.links import LinkSigner

SIGNER = LinkSigner("https://drumbeat.example", b"k" * 32)
DELIVERY = str(uuid.uuid4())


def test_a_token_verifies_for_its_purpose_only():
    token = SIGNER.token(DELIVERY, "unsubscribe")
    assert SIGNER.verify(token, "unsubscribe") == DELIVERY
    assert SIGNER.verify(token, "open") is None


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # altered MAC
        lambda t: ("A" if t[0] != "A" else "B") + t[1:],  # another delivery id
        lambda t: t[:10],  # truncated
        lambda t: "!!!" + t,  # not base64
    ],
)
def test_tampered_tokens_are_refused(mutate):
    assert SIGNER.verify(mutate(SIGNER.token(DELIVERY, "unsubscribe")), "unsubscribe") is None


def test_another_secret_does_not_verify():
    other = LinkSigner("https://drumbeat.example", b"x" * 32)
    assert other.verify(SIGNER.token(DELIVERY, "unsubscribe"), "unsubscribe") is None


def test_one_click_headers():
    headers = SIGNER.email_headers(DELIVERY)
    assert headers["List-Unsubscribe"] == f"<{SIGNER.unsubscribe_url(DELIVERY)}>"
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert SIGNER.unsubscribe_url(DELIVERY).startswith("https://drumbeat.example/u/")


def test_unsubscribe_verifier():
    token = SIGNER.unsubscribe_url(DELIVERY).rsplit("/", 1)[1]
    assert SIGNER.verify_unsubscribe(token) == DELIVERY
    assert SIGNER.verify_open(token) is None


def test_a_trailing_slash_in_the_public_url_makes_no_double_slash():
    signer = LinkSigner("https://drumbeat.example/", b"k" * 32)
    assert signer.open_url(DELIVERY) == SIGNER.open_url(DELIVERY)
    assert signer.unsubscribe_url(DELIVERY) == SIGNER.unsubscribe_url(DELIVERY)


# --- open pixel ---------------------------------------------------------------------------------------


def test_open_url_verifies_for_opens_only():
    url = SIGNER.open_url(DELIVERY)
    prefix = "https://drumbeat.example/t/o/"
    assert url.startswith(prefix)
    token = url.removeprefix(prefix)
    assert SIGNER.verify_open(token) == DELIVERY
    assert SIGNER.verify_unsubscribe(token) is None
    assert SIGNER.verify_click(token) is None
    assert LinkSigner("https://drumbeat.example", b"x" * 32).verify_open(token) is None


# --- clicks -------------------------------------------------------------------------------------------

TARGET = "https://shop.example.com/pricing?plan=pro&utm_source=drumbeat#compare"
CLICK_PREFIX = "https://drumbeat.example/t/c/"


def _click_token(delivery: str = DELIVERY, url: str = TARGET, signer: LinkSigner = SIGNER) -> str:
    url = signer.click_url(delivery, url)
    assert url.startswith(CLICK_PREFIX)
    return url.removeprefix(CLICK_PREFIX)


def _encode(blob: bytes) -> str:
    return base64.urlsafe_b64encode(blob).rstrip(b"=").decode()


def _decode(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def test_a_click_token_gives_back_its_delivery_and_exact_target():
    token = _click_token()
    assert SIGNER.verify_click(token) == (DELIVERY, TARGET, None)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)  # one URL-safe path segment, nothing to escape


def test_a_click_token_binds_non_ascii_targets_too():
    url = "https://example.com/café?q=ü"
    assert SIGNER.verify_click(_click_token(url=url)) == (DELIVERY, url, None)


def test_a_named_click_token_gives_back_its_link_name_too():
    token = SIGNER.click_token(DELIVERY, TARGET, "Pricing page")
    assert SIGNER.verify_click(token) == (DELIVERY, TARGET, "Pricing page")


def test_a_named_click_token_with_its_name_or_target_changed_is_refused():
    blob = _decode(SIGNER.click_token(DELIVERY, TARGET, "pricing"))
    head, labelled = blob[:32], blob[32:]
    assert labelled == bytes([7]) + b"pricing" + TARGET.encode()
    for forged in (
        bytes([7]) + b"careers" + TARGET.encode(),
        labelled[:1] + b"pricing" + b"https://evil.example/",
    ):
        assert SIGNER.verify_click(_encode(head + forged)) is None
    # Nor does dropping the name make an unnamed token of it: each layout has its own MAC purpose.
    assert SIGNER.verify_click(_encode(head + TARGET.encode())) is None


def test_a_name_length_byte_past_the_end_is_refused_not_crashed():
    raw = uuid.UUID(DELIVERY).bytes
    labelled = bytes([200]) + b"pricing"
    assert SIGNER.verify_click(_encode(raw + SIGNER._mac("named_click", raw + labelled) + labelled)) is None


@pytest.mark.parametrize("name", ["", " pricing", "pricing/eu", "<b>", "x" * 65, "prix-été"])
def test_only_link_names_can_be_signed(name):
    with pytest.raises(ValueError, match="not a link name"):
        SIGNER.click_token(DELIVERY, TARGET, name)


def test_a_click_token_is_no_other_token():
    token = _click_token()
    assert SIGNER.verify_open(token) is None
    assert SIGNER.verify_unsubscribe(token) is None
    # An open or unsubscribe token is no click token either.
    assert SIGNER.verify_click(SIGNER.token(DELIVERY, "open")) is None
    assert SIGNER.verify_click(SIGNER.token(DELIVERY, "click")) is None


def test_a_click_token_with_the_target_changed_is_refused():
    blob = _decode(_click_token())
    for target in (
        b"https://evil.example/",
        b"https://shop.example.com.evil.example/pricing",
        TARGET.encode() + b"x",
    ):
        assert SIGNER.verify_click(_encode(blob[:32] + target)) is None


def test_a_click_token_moved_to_another_delivery_is_refused():
    blob = _decode(_click_token())
    other = uuid.UUID(str(uuid.uuid4())).bytes
    assert SIGNER.verify_click(_encode(other + blob[16:])) is None
    # ...and a genuine token of the other delivery for another URL does not lend its MAC.
    other_blob = _decode(_click_token(delivery=str(uuid.UUID(bytes=other)), url="https://evil.example/"))
    assert SIGNER.verify_click(_encode(blob[:16] + other_blob[16:])) is None


def test_a_click_token_from_another_secret_is_refused():
    other = LinkSigner("https://drumbeat.example", b"x" * 32)
    assert SIGNER.verify_click(_click_token(signer=other)) is None


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
        lambda t: t[:40],  # cut inside the MAC
        lambda t: t[:50],  # cut inside the URL
        lambda t: t + "A",
        lambda t: t + "=",
        lambda t: t.replace("-", "+").replace("_", "/") + "+/",  # the other base64 alphabet
        lambda t: "!!!" + t,
        lambda t: "é" + t,
        lambda t: "",
        lambda t: "A" * 20_000,
    ],
)
def test_mangled_click_tokens_are_refused(mutate):
    assert SIGNER.verify_click(mutate(_click_token())) is None


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "mailto:ada@example.com",
        "/relative/path",
        "//evil.example/",
        "https://",
        "https://example.com/a\r\nLocation: https://evil.example/",
        "https://example.com/" + "x" * 5000,
    ],
)
def test_only_absolute_web_urls_can_be_signed(url):
    with pytest.raises(ValueError):
        SIGNER.click_url(DELIVERY, url)


def test_a_validly_maced_non_web_target_is_still_refused():
    """Defense in depth: even a correctly MACed javascript: URL never comes back from verify_click."""
    raw = uuid.UUID(DELIVERY).bytes
    target = b"javascript:alert(1)"
    assert SIGNER.verify_click(_encode(raw + SIGNER._mac("click", raw + target) + target)) is None
