"""What the dashboard shows of a captured message: its parts, its HTML made fit to frame, the
link check and the HTML summary.

Parses with the standard library (`email.policy.default`), which never raises on malformed
mail, and reads HTML with `html.parser`, which never raises either: a broken test message still
shows what it can.

Security: the HTML is hostile until proven otherwise. It is never put into a dashboard page; it
is served alone to a sandboxed iframe under a CSP without script (mailrelay.web.sandbox).
`framed_html` only removes what a CSP cannot stop (`<meta http-equiv>`: a refresh would load a
remote page with no click) and turns `cid:` references into `data:` URIs; it is not a sanitizer
and nothing relies on it as one.
"""

from __future__ import annotations

import base64
import email
import email.policy
import re
import urllib.parse
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from html.parser import HTMLParser

GMAIL_CLIPS = 102 * 1024  # bytes of HTML above which Gmail shows "[Message clipped]"
MAX_INLINED = 5 * 1024 * 1024  # bytes of cid: images turned into data: URIs, in all
INLINE_IMAGES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"})
PARSE_LIMIT = 1024 * 1024  # bytes of a message attachment_count parses; above, it counts fields
_DISPOSITION = re.compile(rb"^content-disposition:[ \t]*(?:attachment|inline)", re.IGNORECASE | re.MULTILINE)
_CID = re.compile(r"cid:([^\"'\s)>]+)", re.IGNORECASE)
_HTTP_EQUIV = re.compile(r"http-equiv", re.IGNORECASE)
_CSS_URL = re.compile(r"url\(\s*['\"]?\s*(https?:|//)", re.IGNORECASE)
_CSS_IMPORT = re.compile(r"@import", re.IGNORECASE)
_NOT_IN_SCHEME = re.compile(r"[\x00-\x20]")  # browsers drop these inside a URL ("java\tscript:")
DANGEROUS = ("javascript", "vbscript", "data")


@dataclass(frozen=True, slots=True)
class Part:
    index: int  # position in the message's walk(): the attachment route's number
    content_type: str
    filename: str | None
    disposition: str | None  # "attachment", "inline" or None
    content_id: str | None  # without the angle brackets
    size: int  # bytes, decoded
    body: bool  # the text or HTML part shown as the message's body


@dataclass(frozen=True, slots=True)
class Link:
    kind: str  # "link" or "image"
    url: str
    text: str  # the link's text, or the image's alt
    flag: str  # "" when nothing is wrong, else what is


@dataclass
class Preview:
    headers: list[tuple[str, str]]  # every header field, in order, decoded
    text: str | None  # the text/plain body
    html: str | None  # the text/html body, as written
    parts: list[Part]  # every leaf part, bodies included
    links: list[Link] = field(default_factory=list)  # of the HTML: <a href> and <img src>
    checks: list[str] = field(default_factory=list)  # what the HTML check flags
    counts: dict[str, int] = field(default_factory=dict)  # links, images, remote images, ...
    defects: int = 0

    @property
    def attachments(self) -> list[Part]:
        return [p for p in self.parts if not p.body]


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def preview(raw: bytes) -> Preview:
    msg = parse(raw)
    text_part = msg.get_body(preferencelist=("plain",))
    html_part = msg.get_body(preferencelist=("html",))
    bodies = {id(p) for p in (text_part, html_part) if p is not None}
    parts = [_part(i, p, id(p) in bodies) for i, p in enumerate(msg.walk()) if not p.is_multipart()]
    headers = [(name, _header(msg, name, value)) for name, value in msg.raw_items()]
    out = Preview(headers, _content(text_part) if text_part is not None else None,
                  _content(html_part) if html_part is not None else None, parts,
                  defects=sum(len(p.defects) for p in msg.walk()))
    if out.html is not None:
        _check_html(out, out.html)
    return out


def attachment_count(raw: bytes) -> int:
    """The leaf parts that are not the text or HTML body (inline images count). Above
    PARSE_LIMIT bytes, the parts with a Content-Disposition field instead: close, and no parse
    of megabytes of base64 for one line of a list."""
    if len(raw) > PARSE_LIMIT:
        return len(_DISPOSITION.findall(raw))
    return len(preview_parts(parse(raw)))


def preview_parts(msg: EmailMessage) -> list[Message]:
    bodies = {id(p) for p in (msg.get_body(preferencelist=("plain",)), msg.get_body(preferencelist=("html",)))
              if p is not None}
    return [p for p in msg.walk() if not p.is_multipart() and id(p) not in bodies]


def part_at(raw: bytes, index: int) -> tuple[Part, bytes] | None:
    """The leaf part at walk() position `index` and its decoded content, or None."""
    msg = parse(raw)
    for i, p in enumerate(msg.walk()):
        if i == index and not p.is_multipart():
            return _part(i, p, False), _payload(p)
    return None


def framed_html(raw: bytes) -> str | None:
    """The HTML body for the iframe: `<meta http-equiv>` disabled (a refresh would navigate the
    frame to a remote page without any click; a CSP cannot stop it), and `cid:` references to
    image parts of the message replaced by `data:` URIs (at most MAX_INLINED bytes in all), so
    inline images show without the frame loading anything. None: no HTML part."""
    msg = parse(raw)
    html_part = msg.get_body(preferencelist=("html",))
    if html_part is None:
        return None
    html = _HTTP_EQUIV.sub("data-blocked-http-equiv", _content(html_part))
    images: dict[str, str] = {}
    budget = MAX_INLINED
    for p in msg.walk():
        cid = _content_id(p)
        if cid and not p.is_multipart() and p.get_content_type() in INLINE_IMAGES:
            data = _payload(p)
            if len(data) <= budget:
                budget -= len(data)
                images[cid] = f"data:{p.get_content_type()};base64,{base64.b64encode(data).decode()}"

    def inline(m: re.Match[str]) -> str:
        return images.get(urllib.parse.unquote(m.group(1)), m.group(0))

    return _CID.sub(inline, html) if images else html


class _Scan(HTMLParser):
    """Collects links, images and what the HTML check flags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[Link] = []
        self.found: dict[str, int] = {}
        self._anchor: tuple[str, list[str]] | None = None

    def count(self, what: str) -> None:
        self.found[what] = self.found.get(what, 0) + 1

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        for name in values:
            if name.startswith("on"):
                self.count("handlers")
        if tag == "a" and "href" in values:
            self._end_anchor()
            self._anchor = (values["href"], [])
        elif tag == "img":
            src = values.get("src", "")
            self.links.append(Link("image", src, values.get("alt", ""), _image_flag(src)))
            scheme = _scheme(src)
            self.count("images")
            if scheme in ("http", "https") or src.strip().startswith("//"):
                self.count("remote images")
        elif tag in ("script", "form", "base", "style"):
            self.count(tag)
        elif tag in ("iframe", "frame", "object", "embed", "applet"):
            self.count("embedded")
        elif tag == "meta" and "http-equiv" in values:
            self.count("meta")
        elif tag == "link" and "stylesheet" in values.get("rel", "").lower():
            self.count("stylesheets")
        if "background" in values and _scheme(values["background"]) in ("http", "https"):
            self.count("remote images")
        if _CSS_URL.search(values.get("style", "")):
            self.count("css urls")

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._end_anchor()

    def handle_data(self, data: str) -> None:
        if self._anchor is not None:
            self._anchor[1].append(data)
        if self.lasttag == "style":
            if _CSS_URL.search(data):
                self.count("css urls")
            if _CSS_IMPORT.search(data):
                self.count("imports")

    def close(self) -> None:
        super().close()
        self._end_anchor()

    def _end_anchor(self) -> None:
        if self._anchor is not None:
            href, text = self._anchor
            self.links.append(Link("link", href, " ".join("".join(text).split()), _link_flag(href)))
            self._anchor = None


def _check_html(out: Preview, html: str) -> None:
    scan = _Scan()
    scan.feed(html)
    scan.close()
    out.links = scan.links
    f = scan.found
    links = [k for k in scan.links if k.kind == "link"]
    out.counts = {"links": len(links), "images": f.get("images", 0), "remote images": f.get("remote images", 0),
                  "characters": len(html), "bytes": len(html.encode("utf-8", "surrogatepass"))}

    def flag(n: int, what: str) -> None:
        if n:
            out.checks.append(f"{n} {what}")

    flag(f.get("script", 0), "<script> element(s): no mail client runs them")
    flag(f.get("handlers", 0), "event handler attribute(s) (onclick=, onerror=, ...): no mail client runs them")
    flag(f.get("form", 0), "form(s): many clients disable forms or warn about them")
    flag(f.get("embedded", 0), "<iframe>, <object> or <embed> element(s): not shown by mail clients")
    flag(f.get("meta", 0), "<meta http-equiv> element(s): ignored by clients (disabled in this preview)")
    flag(f.get("base", 0), "<base> element(s): clients handle relative links differently")
    flag(f.get("stylesheets", 0), "linked stylesheet(s): most clients ignore external CSS")
    flag(f.get("imports", 0), "CSS @import(s): most clients ignore them")
    flag(f.get("remote images", 0), "remote image(s): many clients block them until the reader allows them")
    flag(f.get("css urls", 0), "remote CSS url(...) reference(s): often blocked, and they track the reader")
    flag(sum(1 for k in links if k.flag.startswith("dangerous")), "javascript:, vbscript: or data: link(s)")
    flag(sum(1 for k in links if k.flag.startswith("not https")), "http: link(s) (not https)")
    if out.counts["bytes"] > GMAIL_CLIPS:
        out.checks.append(f"HTML of {out.counts['bytes']} bytes: Gmail clips messages over {GMAIL_CLIPS} bytes")


def _scheme(url: str) -> str:
    cleaned = _NOT_IN_SCHEME.sub("", url)
    scheme, colon, _ = cleaned.partition(":")
    return scheme.lower() if colon and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme) else ""


def _link_flag(href: str) -> str:
    scheme = _scheme(href)
    if scheme in DANGEROUS:
        return f"dangerous: a {scheme}: link"
    if scheme == "http":
        return "not https: the link is sent in clear text"
    if scheme in ("https", "mailto", "tel"):
        return ""
    if not scheme:
        return "relative: goes nowhere from an email" if not href.startswith("#") else ""
    return f"unusual scheme {scheme}:"


def _image_flag(src: str) -> str:
    scheme = _scheme(src)
    if scheme == "http":
        return "remote, not https"
    if scheme in ("https", "cid", "data"):
        return ""
    if src.strip().startswith("//"):
        return "remote (scheme-relative)"
    return "relative: will not load from an email" if not scheme else f"unusual scheme {scheme}:"


def _part(index: int, p: Message, body: bool) -> Part:
    return Part(index, p.get_content_type(), p.get_filename(), p.get_content_disposition(), _content_id(p),
                len(_payload(p)), body)


def _content_id(p: Message) -> str | None:
    value = p.get("Content-ID")
    return str(value).strip().strip("<>").strip() or None if value is not None else None


def _header(msg: EmailMessage, name: str, value: str) -> str:
    """A header field's value on one line, RFC 2047 words decoded where they parse."""
    try:
        decoded: object = msg.policy.header_fetch_parse(name, value)
    except Exception:  # a field the parser chokes on is shown as it came
        decoded = value
    return " ".join(str(decoded).split())


def _payload(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def _content(part: Message) -> str:
    try:
        assert isinstance(part, EmailMessage)
        content = part.get_content()
    except (LookupError, ValueError, AssertionError):  # unknown charset or undecodable: show what we can
        return _payload(part).decode("utf-8", "replace").replace("\r\n", "\n")
    text = content if isinstance(content, str) else bytes(content).decode("utf-8", "replace")
    return text.replace("\r\n", "\n")
