"""What `inbox show` reads from a captured message."""

from __future__ import annotations

from email.message import EmailMessage

from mailrelay.sandbox.summary import summarize


def multipart() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Alice <alice@sender.test>"
    msg["To"] = "bob@dest.test, carol@dest.test"
    msg["Subject"] = "Grüße, your invoice"
    msg["Message-ID"] = "<inv-1@sender.test>"
    msg["Date"] = "Fri, 27 Nov 2026 10:00:00 +0000"
    msg.set_content("Hello Bob,\nyour invoice is attached.\n")
    msg.add_alternative('<p>Hello <a href="https://x.test/1">one</a> <A HREF=\'/2\'>two</A>'
                        '<img src="cid:logo"></p>', subtype="html")
    msg.add_attachment(b"%PDF-1.4 fake" * 10, maintype="application", subtype="pdf", filename="invoice.pdf")
    return bytes(msg)


def test_multipart_message() -> None:
    sig = (b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=sender.test;\r\n"
           b" s=mr2026; h=from:to; bh=abc=; b=def=\r\n")
    s = summarize(sig + multipart())
    assert s.headers["From"] == "Alice <alice@sender.test>"
    assert s.headers["To"] == "bob@dest.test, carol@dest.test"
    assert s.headers["Subject"] == "Grüße, your invoice", "RFC 2047 decoded"
    assert s.headers["Message-ID"] == "<inv-1@sender.test>"
    assert "Cc" not in s.headers
    assert s.dkim == [{"d": "sender.test", "s": "mr2026", "a": "rsa-sha256"}]
    assert s.text == "Hello Bob,\nyour invoice is attached.\n"
    assert s.html is not None and (s.html.links, s.html.images) == (2, 1)
    assert [(a.filename, a.content_type, a.size) for a in s.attachments] == [("invoice.pdf", "application/pdf", 130)]


def test_plain_unsigned_and_broken_messages_do_not_raise() -> None:
    s = summarize(b"Subject: hi\r\n\r\njust text\r\n")
    assert s.text == "just text\n" and s.html is None and s.attachments == [] and s.dkim == []
    s = summarize(b"Content-Type: text/plain; charset=x-unknown-charset\r\n\r\nbytes \xff\r\n")
    assert s.text is not None and "bytes" in s.text
    s = summarize(b"Content-Type: multipart/mixed\r\n\r\nno boundary at all\r\n")
    assert s.defects >= 1
    summarize(b"")
    summarize(b"\x00\xff garbage without headers")
