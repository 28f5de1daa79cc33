"""Open and click tracking for the HTML part of an email: links go through signed click redirects and a
1x1 pixel is added before </body>. Only the HTML part: plain-text links stay as written (tracked text
links surprise people and break copy/paste), and SMS is never tracked.

The HTML is parsed with the standard library's tolerant parser only to *locate* things; the output is
the input with a few spans replaced (the <a> start tags whose href changes) and one insertion (the
pixel), so everything else (comments, Outlook conditionals, <style>, whitespace) is kept byte for byte."""

from __future__ import annotations

import html
import logging
from html.parser import HTMLParser

from app.core.links import LinkSigner, clean_url, is_link_name, is_web_url

log = logging.getLogger("drumbeat.tracking")
LINK_NAME_ATTRIBUTE = "data-link-name"


def pixel_tag(url: str) -> str:
    return (
        f'<img src="{html.escape(url)}" width="1" height="1" alt="" border="0" '
        'style="height:1px!important;width:1px!important;border-width:0!important;'
        'margin:0!important;padding:0!important" />'
    )


class _Locator(HTMLParser):
    """Collects the <a> start tags (offset, raw text, attributes, self-closing) and where </body> and
    </html> start. Positions are turned into string offsets from getpos(), which counts lines by \\n."""

    def __init__(self, source: str):
        super().__init__(convert_charrefs=True)
        self._line_starts = [0]
        self._line_starts.extend(i + 1 for i, ch in enumerate(source) if ch == "\n")
        self.anchors: list[tuple[int, str, list[tuple[str, str | None]], bool]] = []
        self.body_end: int | None = None
        self.html_end: int | None = None

    def _offset(self) -> int:
        line, column = self.getpos()
        return self._line_starts[line - 1] + column

    def handle_starttag(self, tag, attrs):
        self._anchor(tag, attrs, closed=False)

    def handle_startendtag(self, tag, attrs):
        self._anchor(tag, attrs, closed=True)

    def _anchor(self, tag, attrs, *, closed: bool) -> None:
        if tag == "a" and any(name == "href" for name, _ in attrs):
            self.anchors.append((self._offset(), self.get_starttag_text() or "", attrs, closed))

    def handle_endtag(self, tag):
        if tag == "body":
            self.body_end = self._offset()  # the last one wins
        elif tag == "html":
            self.html_end = self._offset()


def _start_tag(attrs: list[tuple[str, str | None]], closed: bool) -> str:
    parts = ["<a"]
    for name, value in attrs:
        parts.append(f" {name}" if value is None else f' {name}="{html.escape(value, quote=True)}"')
    parts.append(" />" if closed else ">")
    return "".join(parts)


def track_html(
    source: str,
    delivery_id: str,
    signer: LinkSigner,
    *,
    track_opens: bool = True,
    track_clicks: bool = True,
) -> str:
    """`source` with every absolute http(s) link of an <a> routed through a signed click URL of this
    delivery (when track_clicks) and an open pixel before </body> (when track_opens). mailto:, tel:,
    "#anchors", relative links, the unsubscribe link and links already pointing at our tracking
    endpoints are left alone, so tracking an already tracked HTML part changes nothing.
    HTML the parser cannot read is returned untouched (tracking never stops a send)."""
    if not (track_opens or track_clicks):
        return source
    locator = _Locator(source)
    try:
        locator.feed(source)
        locator.close()
    except Exception as error:  # html.parser raises on a few malformed declarations (e.g. "<![foo[")
        log.warning("tracking skipped for delivery %s: unreadable HTML (%s)", delivery_id, error)
        return source
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement), in document order
    if track_clicks:
        for offset, raw, attrs, closed in locator.anchors:
            rewritten = _tracked_anchor(signer, delivery_id, attrs)
            if rewritten != attrs and source.startswith(raw, offset):
                edits.append((offset, offset + len(raw), _start_tag(rewritten, closed)))
    pixel_url = signer.open_url(delivery_id)
    if track_opens and pixel_url not in source:
        at = locator.body_end if locator.body_end is not None else locator.html_end
        at = len(source) if at is None else at
        edits.append((at, at, pixel_tag(pixel_url)))
    out, done = [], 0
    for start, end, replacement in sorted(edits, key=lambda e: e[0]):
        out.append(source[done:start])
        out.append(replacement)
        done = end
    out.append(source[done:])
    return "".join(out)


def _tracked_anchor(
    signer: LinkSigner, delivery_id: str, attrs: list[tuple[str, str | None]]
) -> list[tuple[str, str | None]]:
    """An <a>'s attributes with its href tracked. A data-link-name="pricing" names the link for conditions
    ("clicked the pricing link"): it goes into the signed click URL and, once there, out of the tag, where
    the recipient has no use for it. An unusable name is logged and the link tracked by its URL alone."""
    name = next((v for n, v in attrs if n == LINK_NAME_ATTRIBUTE), None)
    if name is not None and not is_link_name(name.strip()):
        log.warning("link name ignored for delivery %s: %r is not a link name", delivery_id, name[:100])
        name = None
    href = next((v for n, v in attrs if n == "href"), None)
    tracked = _tracked(signer, delivery_id, href, name.strip() if name else None)
    if tracked == href:
        return attrs
    return [(n, tracked if n == "href" else v) for n, v in attrs if n != LINK_NAME_ATTRIBUTE]


def _tracked(signer: LinkSigner, delivery_id: str, value: str | None, name: str | None) -> str | None:
    """The click URL for an href value, or the value itself when it must not be tracked."""
    if value is None:
        return None
    url = clean_url(value)
    base = signer.base_url
    if not is_web_url(url) or url.startswith((f"{base}/u/", f"{base}/t/")):
        return value
    try:
        return signer.click_url(delivery_id, url, name)
    except ValueError:  # too long to carry in a link: sent as written
        return value
