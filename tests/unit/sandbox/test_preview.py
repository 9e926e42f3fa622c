"""The dashboard's view of a captured message: link flags (as a browser reads a URL), the HTML
check, parts, and the framed copy of the HTML (no meta http-equiv, cid: images inlined)."""

from __future__ import annotations

import base64
from email.message import EmailMessage

from mailrelay.sandbox.preview import GMAIL_CLIPS, PARSE_LIMIT, attachment_count, framed_html, part_at, preview

PNG = b"\x89PNG\r\n\x1a\n-not-really"


def message(html: str, *, with_image: bool = False, attachment: bytes | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = "a@x.test"
    msg["Subject"] = "=?utf-8?q?caf=C3=A9?="
    msg.set_content("text\n")
    msg.add_alternative(html, subtype="html")
    if with_image:
        msg.get_payload()[1].add_related(PNG, "image", "png", cid="<img%1@x.test>", filename="i.png")
    if attachment is not None:
        msg.add_attachment(attachment, maintype="application", subtype="pdf", filename="f.pdf")
    return msg.as_bytes()


def test_links_are_flagged_as_a_browser_would_read_them() -> None:
    p = preview(message('<a href=" JaVa\tScRiPt:x()">a</a><a href="data:text/html,x">b</a><a href="http://h/">c'
                        '</a><a href="https://h/"><b>d</b>  e</a><a href="mailto:x@y">m</a><a href="/rel">r</a>'
                        '<a href="#top">t</a><a href="ftp://h/">f</a><img src="//cdn/x.png" alt="s">'))
    flags = [(k.kind, k.text, k.flag.split(":")[0]) for k in p.links]
    assert flags == [("link", "a", "dangerous"), ("link", "b", "dangerous"), ("link", "c", "not https"),
                     ("link", "d e", ""), ("link", "m", ""), ("link", "r", "relative"), ("link", "t", ""),
                     ("link", "f", "unusual scheme ftp"), ("image", "s", "remote (scheme-relative)")]
    assert p.counts["links"] == 8 and p.counts["remote images"] == 1
    assert ("Subject", "café") in p.headers


def test_the_html_check_names_what_clients_refuse() -> None:
    p = preview(message('<script>x</script><form></form><iframe></iframe><meta http-equiv="refresh" content="0">'
                        '<base href="http://h/"><link rel="stylesheet" href="http://h/s.css"><style>@import "x";'
                        'p{background:url(https://h/b.png)}</style><p onclick="x" style="background:url(//h/i)">'
                        '<img src="http://h/p.png"><table background="https://h/t.png"></table>'))
    text = "\n".join(p.checks)
    for expected in ("1 <script>", "1 event handler", "1 form", "1 <iframe>", "1 <meta http-equiv>", "1 <base>",
                     "1 linked stylesheet", "1 CSS @import", "2 remote image", "2 remote CSS url"):
        assert expected in text, expected
    assert preview(message("<p>plain</p>")).checks == []
    big = preview(message("<p>" + "x" * GMAIL_CLIPS + "</p>"))
    assert "Gmail clips" in big.checks[-1]


def test_parts_and_the_framed_html() -> None:
    raw = message('<meta HTTP-EQUIV="refresh" content="0;url=http://h/"><img src="cid:img%251@x.test">'
                  '<img src="cid:unknown@x.test">', with_image=True, attachment=b"%PDF")
    p = preview(raw)
    assert [(a.filename, a.content_type, a.content_id) for a in p.attachments] == [
        ("i.png", "image/png", "img%1@x.test"), ("f.pdf", "application/pdf", None)]
    assert [a.body for a in p.parts].count(True) == 2 and attachment_count(raw) == 2
    got = part_at(raw, p.attachments[1].index)
    assert got is not None and got[1] == b"%PDF" and part_at(raw, 0) is None  # 0: the multipart itself
    framed = framed_html(raw)
    assert framed is not None and "http-equiv" not in framed.lower().replace("data-blocked-http-equiv", "")
    assert f'src="data:image/png;base64,{base64.b64encode(PNG).decode()}"' in framed
    assert 'src="cid:unknown@x.test"' in framed  # nothing to inline: left as it is (the CSP blocks it)
    assert framed_html(b"Subject: x\r\n\r\nno html\r\n") is None


def test_a_big_message_is_counted_without_a_parse() -> None:
    raw = message("<p>x</p>", attachment=b"y" * PARSE_LIMIT)
    assert len(raw) > PARSE_LIMIT and attachment_count(raw) == 1
