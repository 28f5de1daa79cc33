import uuid

import pytest

from workers.links import LinkSigner

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
