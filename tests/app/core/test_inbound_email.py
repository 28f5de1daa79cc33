"""parse_inbound_email on messages modeled on what the major clients and mail servers send (fixtures/email),
on small messages built here for one rule each, and on garbage (it never raises)."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.inbound_email import Bounce, InboundEmail, find_return_date, parse_inbound_email

FIXTURES = Path(__file__).parent / "fixtures" / "email"
TODAY = date(2026, 12, 7)  # a Monday: every fixture was sent that day
KINDS = {"reply", "auto_reply", "bounce", "unsubscribe_request"}


def sent(n: int) -> str:
    """The Message-ID Drumbeat gave outbound message number n of the fixtures (make_msgid's form)."""
    return f"<179661436205.19480.149434805186366062{n:02d}@acme.example>"


def parse(name: str, *, today: date = TODAY) -> InboundEmail:
    return parse_inbound_email((FIXTURES / name).read_bytes(), today=today)


def message(
    body: str = "Sounds good, talk soon.", *, subject: str = "Re: Quick question", **headers: str
) -> bytes:
    """A minimal plain-text reply to outbound message 1; keyword arguments add headers (X_Autoreply=...)."""
    lines = [
        "From: Pat Lee <pat@lee.example>",
        "To: sam@acme.example",
        f"Subject: {subject}",
        "Message-ID: <built.1@lee.example>",
        f"In-Reply-To: {sent(1)}",
        *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items()),
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        body,
    ]
    return "\n".join(lines).encode()


def parse_built(raw: bytes) -> InboundEmail:
    return parse_inbound_email(raw, today=TODAY)


# --- Replies --------------------------------------------------------------------------------------------


def test_gmail_reply():
    email = parse("gmail_reply.eml")
    assert email.kind == "reply"
    assert email.message_id == "<CAJx8f3k2Qp9wZ-RbT4mYq1nVh0sD=Lc7uE5aF6gH+q2Xw@mail.gmail.com>"
    assert email.dedupe_key == email.message_id
    assert email.from_address == "jane.doe@gmail.example"
    assert email.from_name == "Jane Doe"
    assert email.to_addresses == ("sam@acme.example",)
    assert email.subject == "Re: Quick question about Q1 planning"
    assert email.references == (sent(22),)
    # The wrapped "On ... wrote:" line, the quote (with our own "Unsubscribe:" footer) and the "-- "
    # signature are gone; "Thanks, Tuesday works" is a sentence, not a sign-off.
    assert email.text == "Hi Sam,\n\nThanks, Tuesday works for me. Could you send over the agenda beforehand?"
    assert email.return_date is None and email.bounce is None


def test_outlook_reply():
    email = parse("outlook_reply.eml")  # CRLF line endings, Thread-Index, a "From: / Sent:" quote block
    assert email.kind == "reply"
    assert (
        email.message_id == "<DB9PR02MB73215E8A1C2B4F0D9E6A7B3CD7A12@DB9PR02MB7321.eurprd02.prod.outlook.com>"
    )
    assert email.from_address == "piotr.kowalski@contoso.example"
    assert email.from_name == "Kowalski, Piotr"
    assert email.references == (sent(23),)
    assert email.text == "Hi Sam,\n\nHappy to talk. Thursday at 2pm CET works best on my side."


def test_apple_mail_reply():
    email = parse("apple_mail_reply.eml")  # "Message-Id" spelled Apple's way, quoted attribution line
    assert email.kind == "reply"
    assert email.message_id == "<8E2D4C1A-3B5F-4A6E-9C7D-0F1E2A3B4C5D@fischer-design.example>"
    assert email.references == (sent(24),)
    assert email.text == "Not this quarter, sorry \u2014 ask me again in March.\n\nLena"


def test_reply_quoted_with_angle_brackets_keeps_only_the_new_lines():
    email = parse("interleaved_quote_reply.eml")
    assert email.kind == "reply"
    assert email.text == "Yes, but only after the 15th.\n\nThat would be Marta, marta@novak.example."
    # In-Reply-To first, then References newest first (it lists the thread oldest first), each once.
    assert email.references == (sent(25), sent(1))


def test_html_only_reply_is_converted_and_its_quote_cut():
    email = parse("html_only_reply.eml")
    assert email.kind == "reply"
    assert email.references == (sent(26),)
    assert email.text == "Sounds good \u2013 let's do Thursday.\nCould you include our CTO, Arun & his team?"


def test_html_blockquote_is_quoted_history():
    html = (
        "<html><body><div>Works for me.</div><div><br></div><div>Pat</div>"
        '<blockquote type="cite"><div>Would Tuesday work?</div><div>Sam</div></blockquote></body></html>'
    )
    raw = message(html).replace(b"Content-Type: text/plain", b"Content-Type: text/html")
    assert parse_built(raw).text == "Works for me.\n\nPat"


def test_iso_8859_1_reply():
    email = parse("latin1_reply.eml")  # 8-bit Latin-1 body, Latin-1 encoded words, French quote header
    assert email.kind == "reply"
    assert email.subject == "Re: Réunion de lancement"
    assert email.from_name == "Hélène Dubôis"
    assert email.text == "Très bien, jeudi à 14 h me convient. À bientôt !\n\nHélène"


def test_encoded_word_headers():
    email = parse("encoded_word_subject.eml")
    assert email.subject == "Re: Angebot für Müller & Söhne \u2013 Rückfrage"  # two words, folded
    assert email.from_name == "Jörg Söhnel"  # base64 encoded word
    assert email.to_addresses == ("sam@acme.example", "team@acme.example")
    assert email.text == "Gerne, schicken Sie uns das Angebot als PDF."  # base64 body, German sign-off cut
    assert email.kind == "reply"


def test_a_character_split_across_encoded_words_is_rejoined():
    raw = message(subject="=?UTF-8?Q?Re:_=C3?= =?UTF-8?Q?=A9t=C3=A9?= plain =?ISO-8859-1?Q?caf=E9?=")
    assert parse_built(raw).subject == "Re: été plain café"
    # whitespace between encoded words goes, even when their charsets differ
    assert parse_built(message(subject="=?UTF-8?Q?=C3=A9?= =?ISO-8859-1?Q?=E9?=")).subject == "éé"


def test_message_without_message_id_is_keyed_by_its_hash():
    raw = (FIXTURES / "no_message_id_reply.eml").read_bytes()
    email = parse_inbound_email(raw, today=TODAY)
    assert email.message_id is None
    assert email.dedupe_key == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert email.references == (sent(37),)
    assert email.text == "Dr. Ames is interested. Please call the office at 555-0142 after 2pm."
    assert email.kind == "reply"


def test_message_ids_are_normalized_and_references_capped():
    raw = message(
        Message_ID="  bare.id@lee.example ",
        References=" ".join(f"<r{i}@x.example>" for i in range(80)),
    ).replace(b"Message-ID: <built.1@lee.example>\n", b"")
    email = parse_built(raw)
    assert email.message_id == "<bare.id@lee.example>"
    assert email.references[:3] == (sent(1), "<r79@x.example>", "<r78@x.example>")
    assert len(email.references) == 50


def test_an_overlong_message_id_is_ignored():
    raw = message().replace(b"<built.1@lee.example>", b"<" + b"x" * 300 + b"@lee.example>")
    email = parse_built(raw)
    assert email.message_id is None
    assert email.dedupe_key == "sha256:" + hashlib.sha256(raw).hexdigest()


# --- Auto-replies ---------------------------------------------------------------------------------------


def test_exchange_automatic_reply_with_an_english_return_date():
    email = parse("exchange_auto_reply.eml")
    assert email.kind == "auto_reply"
    assert email.references == (sent(27),)
    assert email.return_date == date(2026, 12, 14)  # "back on Monday, December 14" (no year)
    assert email.text.startswith("Thank you for your message. I am out of the office")


def test_gmail_vacation_responder_is_recognized_by_its_headers():
    email = parse("gmail_vacation_reply.eml")  # subject "Re: ...": Auto-Submitted and Precedence only
    assert email.kind == "auto_reply"
    assert email.return_date == date(2026, 12, 21)  # "until 2026-12-21"
    assert email.references == (sent(28),)


def test_german_out_of_office_back_date_wins_over_until_date():
    email = parse(
        "german_out_of_office.eml"
    )  # X-Autoreply, "bis einschließlich 18.12.2026 ... ab dem 21.12."
    assert email.kind == "auto_reply"
    assert email.return_date == date(2026, 12, 21)
    assert email.from_name == "Klaus Müller"
    assert not email.text.endswith("Klaus Müller")  # "Mit freundlichen Grüßen" and below are cut


def test_french_out_of_office_date_without_year_rolls_into_next_year():
    email = parse("french_out_of_office.eml")
    assert email.kind == "auto_reply"
    assert email.subject == "Réponse automatique : Quick question about Q1 planning"
    assert email.return_date == date(2027, 1, 4)  # "de retour le lundi 4 janvier", sent in December


def test_spanish_out_of_office_is_recognized_by_its_subject_alone():
    email = parse("spanish_out_of_office.eml")  # no auto-reply header at all
    assert email.kind == "auto_reply"
    assert email.return_date == date(2027, 1, 8)  # "hasta el viernes 8 de enero de 2027"
    assert email.from_name == "Lucía Gómez"


def test_a_return_date_in_the_past_is_none():
    assert parse("exchange_auto_reply.eml", today=date(2026, 12, 20)).return_date is None
    assert parse("gmail_vacation_reply.eml", today=date(2027, 1, 5)).return_date is None


@pytest.mark.parametrize(
    ("header", "value", "kind"),
    [
        ("Auto-Submitted", "auto-replied (zimbra; vacation)", "auto_reply"),
        ("Auto-Submitted", "auto-generated", "auto_reply"),
        ("Auto-Submitted", "no", "reply"),
        ("X-Autoreply", "yes", "auto_reply"),
        ("X-Autorespond", "Vacation", "auto_reply"),
        ("X-Autogenerated", "Reply", "auto_reply"),
        ("Precedence", "auto_reply", "auto_reply"),
        ("Precedence", "bulk", "auto_reply"),
        ("Precedence", "junk", "auto_reply"),
        ("Precedence", "list", "reply"),
        # Outlook sets it on more than auto-replies: alone it says nothing (with an OOO subject, see below).
        ("X-Auto-Response-Suppress", "All", "reply"),
    ],
)
def test_auto_reply_headers(header, value, kind):
    assert parse_built(message(**{header.replace("-", "_"): value})).kind == kind


@pytest.mark.parametrize(
    "subject",
    [
        "Out of Office: Quick question",
        "Automatic reply: Quick question",
        "Auto-Reply: Quick question",
        "Abwesenheitsnotiz",
        "Automatische Antwort: Quick question",
        "Réponse automatique : Quick question",
        "Absence du bureau",
        "Respuesta automática: Quick question",
        "Fuera de la oficina",
    ],
)
def test_out_of_office_subjects(subject):
    email = parse_built(message("I am away.", subject=subject, X_Auto_Response_Suppress="All"))
    assert email.kind == "auto_reply"


def test_an_auto_reply_that_mentions_unsubscribing_stays_an_auto_reply():
    email = parse_built(message("I am away. To unsubscribe, reply STOP.", Auto_Submitted="auto-replied"))
    assert email.kind == "auto_reply"


# --- Return dates ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I'm out and will be back on Monday, December 14.", date(2026, 12, 14)),
        ("Back in the office on December 14th, 2026.", date(2026, 12, 14)),
        ("I will be back on the 14th of December.", date(2026, 12, 14)),
        ("Returning 12/14/2026.", date(2026, 12, 14)),
        ("Out of office until 2026-12-14.", date(2026, 12, 14)),
        ("I am travelling from December 8 to December 14.", date(2026, 12, 14)),
        ("Ich bin bis zum 14.12. nicht im Büro.", date(2026, 12, 14)),
        ("Abwesend bis 14/12/2026.", date(2026, 12, 14)),
        ("Ab Montag, dem 14.12. bin ich wieder erreichbar.", date(2026, 12, 14)),
        ("Je serai de retour le 14 décembre.", date(2026, 12, 14)),
        ("Absente jusqu'au 1er janvier 2027.", date(2027, 1, 1)),
        ("Estaré fuera hasta el 14 de diciembre.", date(2026, 12, 14)),
        ("Vuelvo el lunes 4 de enero.", date(2027, 1, 4)),
        ("I am out of the office with limited access to email.", None),
        ("Thanks for your message of 7.12.2026.", None),  # a date, but not a return date
        ("Back on 2026-12-01.", None),  # in the past
        ("Back on December 1.", None),  # no year: the nearest December 1 is past
        ("Zurück am 31.02.2027.", None),  # no such day
    ],
)
def test_return_dates(text, expected):
    assert find_return_date(text, today=TODAY) == expected


# --- Bounces --------------------------------------------------------------------------------------------


def test_postfix_dsn_5_1_1():
    email = parse("postfix_dsn_5_1_1.eml")
    assert email.kind == "bounce"  # though Auto-Submitted: auto-replied: a bounce wins over an auto-reply
    assert email.bounce == Bounce(
        permanent=True,
        status="5.1.1",
        recipients=("j.smith@globex.example",),  # Final- and Original-Recipient, lowercased, once
        diagnostic="550 5.1.1 <j.smith@globex.example>: Recipient address rejected: User unknown in "
        "virtual mailbox table",
    )
    # No In-Reply-To: the original's Message-ID comes from the text/rfc822-headers part.
    assert email.references == (sent(29),)
    assert email.dedupe_key == email.message_id == "<20261207100219.4R7kQ12xyzz@mail.acme.example>"
    assert email.return_date is None


def test_gmail_delay_dsn_is_temporary():
    email = parse("gmail_dsn_delay_4_4_1.eml")
    assert email.kind == "bounce"
    assert email.bounce is not None
    assert email.bounce.permanent is False
    assert email.bounce.status == "4.4.1"
    assert email.bounce.recipients == ("ops@initech.example",)
    assert email.bounce.diagnostic is not None
    assert email.bounce.diagnostic.startswith("The recipient server did not accept our requests to connect.")
    assert email.references == (sent(30),)  # from message/rfc822, In-Reply-To and References: once
    assert email.text.startswith("Message not delivered yet\nThere was a temporary problem")


def test_exchange_ndr_5_4_1():
    email = parse("exchange_ndr_5_4_1.eml")
    assert email.kind == "bounce"
    assert email.bounce is not None
    assert email.bounce.permanent is True
    assert email.bounce.status == "5.4.1"
    assert email.bounce.recipients == ("d.ross@northwind.example",)
    assert email.bounce.diagnostic is not None
    assert email.bounce.diagnostic.startswith("550 5.4.1 Recipient address rejected: Access denied.")
    assert email.references == (sent(31),)
    assert email.from_address == "microsoftexchange329e71ec88ae4615bbc36ab6ce41109e@northwind.onmicrosoft.com"


def test_qmail_bounce_is_read_by_flufl_bounce():
    raw = (FIXTURES / "qmail_bounce.eml").read_bytes()
    email = parse_inbound_email(raw, today=TODAY)
    assert email.kind == "bounce"
    assert email.bounce == Bounce(
        permanent=True,
        status="5.1.1",
        recipients=("gavin@hooli.example",),
        diagnostic="Sorry, no mailbox here by that name. (#5.1.1)",
    )
    assert email.references == (sent(32),)  # the Message-ID line of the copy below the notice
    assert email.dedupe_key == "sha256:" + hashlib.sha256(raw).hexdigest()  # qmail sets no Message-ID
    assert "Below this line" not in email.text


def test_exim_bounce_without_enhanced_status_is_permanent_on_its_550():
    email = parse("exim_bounce.eml")
    assert email.kind == "bounce"
    assert email.bounce == Bounce(
        permanent=True,
        status=None,
        recipients=("a.wesker@umbrella.example",),
        diagnostic="550 Unrouteable address",
    )
    assert email.references == (sent(33),)


def test_bounce_without_status_or_5xx_code_is_temporary():
    raw = (
        b"From: postmaster@mx.lee.example\nTo: sam@acme.example\nSubject: Undeliverable: Quick question\n"
        b"Message-ID: <ndr.1@mx.lee.example>\n\n"
        b"Your message to pat@lee.example could not be delivered yet. The server will keep trying.\n"
    )
    email = parse_built(raw)
    assert email.kind == "bounce"
    assert email.bounce == Bounce(permanent=False, status=None, recipients=(), diagnostic=None)


def dsn(action: str, status: str, diagnostic: str) -> bytes:
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.lee.example>\nTo: sam@acme.example\n"
        "Subject: Delivery report\nMessage-ID: <dsn.1@mx.lee.example>\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        "--B\nContent-Type: text/plain\n\nA delivery report.\n\n"
        "--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.lee.example\n\n"
        f"Final-Recipient: rfc822; Pat@Lee.example\nAction: {action}\nStatus: {status}\n"
        f"Diagnostic-Code: smtp; {diagnostic}\n\n"
        f"--B\nContent-Type: text/rfc822-headers\n\nMessage-ID: {sent(1)}\n\n--B--\n"
    ).encode()


@pytest.mark.parametrize(
    ("status", "diagnostic", "permanent", "read_status"),
    [
        ("5.7.1", "554 5.7.1 Rejected by policy", True, "5.7.1"),
        ("4.2.2", "452 4.2.2 Mailbox full", False, "4.2.2"),
        ("unknown", "550 Mailbox unavailable", True, None),  # no status: the 5xx code decides
        ("unknown", "Connection timed out", False, None),  # neither: temporary
    ],
)
def test_dsn_permanence(status, diagnostic, permanent, read_status):
    email = parse_built(dsn("failed", status, diagnostic))
    assert email.kind == "bounce"
    assert email.bounce == Bounce(permanent, read_status, ("pat@lee.example",), diagnostic)
    assert email.references == (sent(1),)


def test_a_dsn_reporting_success_is_no_bounce():
    email = parse_built(dsn("delivered", "2.0.0", "250 2.0.0 OK"))
    assert email.kind == "auto_reply"
    assert email.bounce is None


def test_a_forwarded_bounce_is_a_reply():
    body = (FIXTURES / "qmail_bounce.eml").read_bytes().split(b"\n\n", 1)[1].decode()
    email = parse_built(message("FYI, see below.\n\n" + body, subject="Fwd: failure notice"))
    assert email.kind == "reply"
    assert email.bounce is None


# --- Unsubscribe requests -------------------------------------------------------------------------------


def test_please_remove_me_reply():
    email = parse("remove_me_reply.eml")  # iPhone: "Sent from my iPhone" and a quoted attribution
    assert email.kind == "unsubscribe_request"
    assert email.text == "Please remove me from your list."
    assert email.references == (sent(34),)


def test_unsubscribe_reply():
    email = parse("unsubscribe_reply.eml")  # Thunderbird, format=flowed
    assert email.kind == "unsubscribe_request"
    assert email.text == "UNSUBSCRIBE"


def test_a_long_reply_that_mentions_unsubscribe_is_a_reply():
    email = parse("long_reply_mentions_unsubscribe.eml")
    assert email.kind == "reply"
    assert "about to hit unsubscribe" in email.text
    assert email.text.endswith("in January.\n\nOmar")


@pytest.mark.parametrize(
    "body",
    [
        "Unsubscribe",
        "Stop",
        "Please take me off your list.",
        "Stop emailing me!",
        "Please opt me out, thanks.",
        "Not interested. Remove me.",
        "Bitte abmelden.",
        "Bitte melden Sie mich von diesem Verteiler ab.",
        "Keine weiteren E-Mails, danke.",
        "Merci de me désabonner.",
        "Veuillez me retirer de votre liste, merci. Désinscription.",
        "Por favor, darme de baja.",
        "No me envíen más correos.",
    ],
)
def test_unsubscribe_requests(body):
    assert parse_built(message(body + "\n\nOn Mon, Dec 7, 2026 at 10:02 AM Sam wrote:\n> Hi\n")).kind == (
        "unsubscribe_request"
    )


@pytest.mark.parametrize(
    "body",
    [
        "Please don't unsubscribe me, I like these.",
        "Can you remove me from the cc and add Bob?",
        "Stop by our booth at the fair next week!",
        "Yes, let's talk Tuesday.",
        # the words are in the quote, not in the new text
        "Sounds good.\n\nOn Mon, Dec 7, 2026 at 10:02 AM Sam wrote:\n> Unsubscribe: https://x.example/u\n",
    ],
)
def test_not_unsubscribe_requests(body):
    assert parse_built(message(body)).kind == "reply"


def test_a_new_message_can_ask_in_its_subject_alone():
    assert parse_built(message("", subject="Unsubscribe")).kind == "unsubscribe_request"
    assert parse_built(message("Thanks", subject="Re: Unsubscribe")).kind == "reply"


# --- Garbage never raises -------------------------------------------------------------------------------


def check_invariants(raw: bytes, email: InboundEmail) -> None:
    assert isinstance(email, InboundEmail)
    assert email.kind in KINDS
    assert email.dedupe_key == (email.message_id or "sha256:" + hashlib.sha256(raw).hexdigest())
    assert len(email.text) <= 10_000
    assert (email.bounce is not None) == (email.kind == "bounce")
    assert email.return_date is None or email.kind == "auto_reply"
    assert all(ref.startswith("<") and ref.endswith(">") and len(ref) <= 255 for ref in email.references)
    assert len(email.dedupe_key) <= 255


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_never_raise(raw):
    check_invariants(raw, parse_inbound_email(raw, today=TODAY))


@pytest.mark.parametrize("raw", [b"", b"\x00\xff\xfe garbage", b"no colon here\n\nbody", b"\r\n\r\n"])
def test_bytes_without_a_header_are_an_empty_reply(raw):
    email = parse_inbound_email(raw, today=TODAY)
    assert email == InboundEmail(
        message_id=None,
        dedupe_key="sha256:" + hashlib.sha256(raw).hexdigest(),
        from_address=None,
        from_name=None,
        to_addresses=(),
        subject="",
        references=(),
        kind="reply",
        text="",
        return_date=None,
        bounce=None,
    )


HEADER_NAMES = [
    "From", "To", "Subject", "Message-ID", "In-Reply-To", "References", "Auto-Submitted", "Precedence",
    "X-Failed-Recipients", "Content-Type", "Content-Transfer-Encoding", "Content-Disposition",
]  # fmt: skip
CONTENT_TYPES = [
    'multipart/report; report-type=delivery-status; boundary="B"',
    'multipart/alternative; boundary="B"',
    "message/delivery-status",
    "message/rfc822",
    "text/rfc822-headers",
    "text/html; charset=bogus",
    "text/plain; charset=utf-16",
]
MARKUP = [
    *("\n", "--B\n", "--B--\n", "Content-Type: ", "=?utf-8?b?", "?=", "=?x?q?=C3", "<", ">", "> "),
    *("Status: 5.1.1\n", "Action: failed\n", "On Mon wrote:\n", "<blockquote>", "<![CDATA[", "&#x"),
]
pieces = st.one_of(st.text(max_size=80), st.sampled_from(MARKUP + CONTENT_TYPES))


@st.composite
def mangled_emails(draw) -> bytes:
    headers = draw(
        st.lists(st.tuples(st.sampled_from(HEADER_NAMES), st.one_of(st.sampled_from(CONTENT_TYPES), pieces)))
    )
    body = "".join(draw(st.lists(pieces, max_size=40)))
    text = "".join(f"{name}: {value}\n" for name, value in headers) + "\n" + body
    return text.encode("utf-8", errors="surrogateescape")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mangled_emails())
def test_mangled_emails_never_raise(raw):
    check_invariants(raw, parse_inbound_email(raw, today=TODAY))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(path.name for path in FIXTURES.glob("*.eml"))),
    st.integers(min_value=0, max_value=6000),
    st.binary(max_size=60),
)
def test_damaged_fixtures_never_raise(name, position, junk):
    """A real message cut short or with junk spliced in anywhere: still read, never an exception."""
    original = (FIXTURES / name).read_bytes()
    raw = original[:position] + junk + original[position + len(junk) :]
    check_invariants(raw, parse_inbound_email(raw, today=TODAY))


def test_raw_must_be_bytes():
    with pytest.raises(TypeError):
        parse_inbound_email("From: a@b.example\n\nhi", today=TODAY)  # type: ignore[arg-type]


def test_a_message_without_from_is_not_handed_to_a_crashing_bounce_detector(caplog):
    # flufl.bounce's Yale detector raises on a message without From, and flufl logs the traceback.
    with caplog.at_level("DEBUG", logger="flufl.bounce"):
        email = parse_inbound_email(b"Subject: hello\n\nJust text.", today=TODAY)
    assert email.kind == "reply" and email.text == "Just text."
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []
