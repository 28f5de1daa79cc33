"""Open pixel and click tracking of an email's HTML part (workers.tracking), and the sequence settings
that switch it (sql/functions/definitions.sql, validate_settings)."""

from __future__ import annotations

import uuid
from html.parser import HTMLParser

import pytest
from psycopg.types.json import Jsonb

from app.core.links import LinkSigner
from tests.sql.factories import new_tenant, sms_sequence
from tests.support import call, call_one, sql_error
from workers.tracking import track_html

SIGNER = LinkSigner("https://drumbeat.example", b"t" * 32)
DELIVERY = str(uuid.uuid4())
CLICK = "https://drumbeat.example/t/c/"
OPEN = "https://drumbeat.example/t/o/"


class Tags(HTMLParser):
    """Every start tag with its attributes, in order (what a mail client would see)."""

    def __init__(self, source: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(source)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def hrefs(self) -> list[str | None]:
        return [attrs.get("href") for tag, attrs in self.tags if tag == "a"]

    def images(self) -> list[str | None]:
        return [attrs.get("src") for tag, attrs in self.tags if tag == "img"]


def clicks_only(source: str) -> str:
    return track_html(source, DELIVERY, SIGNER, track_opens=False)


def target_of(href: str | None) -> str:
    """The URL a tracked href redirects to, checked to be a genuine click token of DELIVERY."""
    assert href is not None and href.startswith(CLICK), href
    verified = SIGNER.verify_click(href.removeprefix(CLICK))
    assert verified is not None, href
    delivery, target, _ = verified
    assert delivery == DELIVERY
    return target


# --- clicks -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("anchor", "target"),
    [
        ('<a href="https://example.com/a?x=1&amp;y=2">', "https://example.com/a?x=1&y=2"),
        ("<a href='https://example.com/b'>", "https://example.com/b"),
        ("<a href=https://example.com/c>", "https://example.com/c"),
        ('<a href = "http://example.com/d" >', "http://example.com/d"),
        ("<A HREF=\"https://example.com/E\" TARGET='_blank'>", "https://example.com/E"),
        ('<a\n  class="btn"\n  href=\'https://example.com/f?q="x"\'>', 'https://example.com/f?q="x"'),
        ('<a href="  https://example.com/g\n/h\t ">', "https://example.com/g/h"),  # as a browser reads it
        ('<a href="HTTPS://Example.com/i">', "HTTPS://Example.com/i"),
        ('<a href="https://example.com/café">', "https://example.com/café"),
    ],
)
def test_web_links_go_through_a_click_url_that_verifies_back(anchor, target):
    tracked = clicks_only(f"<p>Hello {anchor}there</a>!</p>")
    [href] = Tags(tracked).hrefs()
    assert target_of(href) == target
    assert tracked.startswith("<p>Hello <a ") and tracked.endswith(">there</a>!</p>")


def test_other_attributes_are_kept():
    tracked = clicks_only('<a class="btn" href="https://example.com/" download style="color:red">Go</a>')
    [(tag, attrs)] = Tags(tracked).tags
    assert tag == "a" and attrs.pop("href", "").startswith(CLICK)
    assert attrs == {"class": "btn", "download": None, "style": "color:red"}


def test_a_link_name_goes_into_the_signed_click_and_out_of_the_tag():
    tracked = clicks_only('<a data-link-name=" Pricing " class="btn" href="https://example.com/p">Go</a>')
    [(tag, attrs)] = Tags(tracked).tags
    assert tag == "a" and attrs.keys() == {"class", "href"}
    assert SIGNER.verify_click(attrs["href"].removeprefix(CLICK)) == (
        DELIVERY,
        "https://example.com/p",
        "Pricing",
    )


def test_an_unusable_link_name_is_logged_and_the_link_tracked_by_url(caplog):
    tracked = clicks_only('<a data-link-name="pricing/eu" href="https://example.com/p">Go</a>')
    [href] = Tags(tracked).hrefs()
    assert SIGNER.verify_click(href.removeprefix(CLICK)) == (DELIVERY, "https://example.com/p", None)
    assert "'pricing/eu' is not a link name" in caplog.text


def test_a_link_name_on_an_untracked_link_is_left_alone():
    source = '<a data-link-name="mail" href="mailto:sales@example.com">Write</a>'
    assert clicks_only(source) == source


def test_a_self_closing_anchor_stays_self_closing():
    tracked = clicks_only('<a href="https://example.com/"/>')
    assert tracked.startswith(f'<a href="{CLICK}') and tracked.endswith('" />')


@pytest.mark.parametrize(
    "anchor",
    [
        '<a href="mailto:ada@example.com">',
        '<a href="MAILTO:ada@example.com">',
        "<a href='tel:+15550001111'>",
        '<a href="#top">',
        '<a href="/relative/path">',
        '<a href="//example.com/protocol-relative">',
        '<a href="javascript:void(0)">',
        '<a href="">',
        "<a href>",
        '<a name="top">',
        "<a>",
        '<a href="https://example.com/' + "x" * 5000 + '">',  # too long to carry: sent as written
    ],
)
def test_other_links_are_left_exactly_as_written(anchor):
    source = f"<p>{anchor}x</a></p>"
    assert clicks_only(source) == source


def test_the_unsubscribe_link_is_never_tracked():
    unsubscribe = SIGNER.unsubscribe_url(DELIVERY)
    source = f'<p><a href="https://example.com/">Site</a> <a href="{unsubscribe}">Unsubscribe</a></p>'
    tracked = track_html(source, DELIVERY, SIGNER)
    site, kept = Tags(tracked).hrefs()
    assert target_of(site) == "https://example.com/"
    assert kept == unsubscribe
    assert f'<a href="{unsubscribe}">Unsubscribe</a>' in tracked


def test_links_outside_anchor_tags_are_left_alone():
    source = (
        '<!--[if mso]><a href="https://example.com/outlook">o</a><![endif]-->'
        "<style>a[href^='https://example.com/'] { color: red }</style>"
        "<script>document.write('<a href=\"https://example.com/s\">')</script>"
        "<p>Visit https://example.com/plain today</p>"
        '<img src="https://example.com/logo.png">'
    )
    assert clicks_only(source) == source


def test_everything_but_the_rewritten_tags_is_kept_byte_for_byte():
    source = (
        "<!DOCTYPE html>\r\n<html>\r\n<head><style>p { margin: 0 }</style></head>\r\n"
        "<BODY>\r\n  <p>Hi &amp; welcome</p>\r\n"
        '  <a href="https://example.com/one">One</a> &middot;\r\n'
        "  <a\r\n href='https://example.com/two'>Two</a>\r\n"
        "</BODY>\r\n</html>\r\n"
    )
    tracked = clicks_only(source)
    one, two = Tags(tracked).hrefs()
    assert (target_of(one), target_of(two)) == ("https://example.com/one", "https://example.com/two")
    assert tracked.replace(one, "ONE", 1).replace(two, "TWO", 1) == (
        source.replace("https://example.com/one", "ONE").replace(
            "<a\r\n href='https://example.com/two'>", '<a href="TWO">'
        )
    )


def test_the_tag_structure_is_unchanged_apart_from_hrefs_and_the_pixel():
    source = (
        "<html><body><table><tr><td>"
        '<a href="https://example.com/1" class="c"><img src="https://example.com/i.png" alt="i"></a>'
        '</td><td><a href="mailto:x@example.com">m</a><a href=#top>t</a></td></tr></table>'
        "<div><p>text</p><br/></div></body></html>"
    )
    before, after = Tags(source).tags, Tags(track_html(source, DELIVERY, SIGNER)).tags
    assert after[-1][0] == "img" and after[-1][1]["src"].startswith(OPEN)

    def without_hrefs(tags):
        return [(tag, {k: v for k, v in attrs.items() if k != "href"}) for tag, attrs in tags]

    assert without_hrefs(after[:-1]) == without_hrefs(before)
    hrefs = [(old.get("href"), new.get("href")) for (_, old), (_, new) in zip(before, after, strict=False)]
    assert [pair for pair in hrefs if pair != (None, None)] == [
        ("https://example.com/1", SIGNER.click_url(DELIVERY, "https://example.com/1")),
        ("mailto:x@example.com", "mailto:x@example.com"),
        ("#top", "#top"),
    ]


def test_tracking_twice_changes_nothing_more():
    source = '<html><body><a href="https://example.com/">x</a></body></html>'
    once = track_html(source, DELIVERY, SIGNER)
    assert track_html(once, DELIVERY, SIGNER) == once
    assert len(Tags(once).images()) == 1


def test_every_link_gets_its_own_token():
    tracked = clicks_only('<a href="https://example.com/a">a</a><a href="https://example.com/b">b</a>')
    assert [target_of(h) for h in Tags(tracked).hrefs()] == ["https://example.com/a", "https://example.com/b"]


# --- open pixel ---------------------------------------------------------------------------------------


def pixel_only(source: str) -> str:
    return track_html(source, DELIVERY, SIGNER, track_clicks=False)


def test_the_pixel_goes_just_before_the_closing_body_tag():
    tracked = pixel_only("<html><body><p>Hi</p></BODY>\n</html>")
    assert tracked.startswith("<html><body><p>Hi</p><img ") and tracked.endswith(" /></BODY>\n</html>")
    [attrs] = [a for tag, a in Tags(tracked).tags if tag == "img"]
    assert attrs["width"] == "1" and attrs["height"] == "1" and attrs["alt"] == ""
    assert SIGNER.verify_open(attrs["src"].removeprefix(OPEN)) == DELIVERY


def test_the_pixel_goes_before_the_last_closing_body_tag():
    tracked = pixel_only("<body>a</body><p>stray</p></body>")
    assert tracked.startswith("<body>a</body><p>stray</p><img ") and tracked.endswith("</body>")


def test_without_a_body_tag_the_pixel_goes_before_html_or_at_the_end():
    assert pixel_only("<html><p>Hi</p></html>").startswith("<html><p>Hi</p><img ")
    fragment = pixel_only("<p>Hi</p>")
    assert fragment.startswith("<p>Hi</p><img ") and fragment.endswith(" />")


def test_a_body_tag_in_a_comment_or_script_is_not_the_body():
    tracked = pixel_only("<p>Hi</p><!-- </body> --><script>'</body>'</script>")
    assert tracked.startswith("<p>Hi</p><!-- </body> --><script>'</body>'</script><img ")


def test_no_flags_no_change():
    source = '<html><body><a href="https://example.com/">x</a></body></html>'
    assert track_html(source, DELIVERY, SIGNER, track_opens=False, track_clicks=False) == source


def test_html_the_parser_cannot_read_is_sent_untouched():
    source = '<![foo[ x ]]><a href="https://example.com/">x</a>'
    assert track_html(source, DELIVERY, SIGNER) == source


# --- the settings that switch it (SQL) ----------------------------------------------------------------


@pytest.fixture
def tenant(conn):
    return new_tenant(conn)


def _email_definition(settings: dict) -> dict:
    steps = [{"kind": "email", "subject": "Hi", "body": "Hello", "html_body": "<p>Hello</p>"}]
    return sms_sequence(channel="email", settings=settings, steps=steps)


@pytest.mark.parametrize("field", ["track_opens", "track_clicks"])
@pytest.mark.parametrize("value", ["yes", 1, [], {}])
def test_tracking_settings_must_be_booleans(tenant, field, value):
    with sql_error(tenant.conn, "PT422", field=f"settings.{field}", match="true or false"):
        call(tenant.conn, "create_sequence", tenant.workspace_id, Jsonb(_email_definition({field: value})))


def test_tracking_settings_are_accepted_as_booleans(tenant):
    settings = {"track_opens": False, "track_clicks": True}
    sequence_id = call_one(
        tenant.conn, "create_sequence", tenant.workspace_id, Jsonb(_email_definition(settings))
    )
    tenant.conn.execute("RESET ROLE")
    stored = tenant.conn.execute(
        "SELECT settings FROM drumbeat.sequences WHERE id = %s", (sequence_id,)
    ).fetchone()
    assert stored[0]["track_opens"] is False and stored[0]["track_clicks"] is True
