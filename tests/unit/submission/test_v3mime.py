"""build_messages: one RFC 5322 message per personalization that parses back as it was asked."""

from __future__ import annotations

import base64
import email
import os
from email import policy
from email.message import EmailMessage
from typing import Any

import pytest

from mailrelay.core.linelength import has_long_line
from mailrelay.submission import v3errors as E
from mailrelay.submission.v3errors import MailSendError
from mailrelay.submission.v3mail import MailSend, Personalization, parse_mail_send
from mailrelay.submission.v3mime import Outgoing, Rendered, build_messages
from mailrelay.submission.v3parts import Content

NOW = 1_700_000_000.0
BLOB = os.urandom(100_000) + b"\r\n\n\r\x00end"  # every byte value, bare line ends too
LOGO = bytes(range(256))


def doc(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "personalizations": [{"to": [{"email": "bob@dest.test", "name": "Bob"}]}],
        "from": {"email": "alice@sender.test", "name": "Alice"},
        "subject": "Hello",
        "content": [{"type": "text/plain", "value": "Hi"}],
    }
    return base | changes


def build(data: dict[str, Any], **kw: Any) -> list[Outgoing]:
    return build_messages(parse_mail_send(data, now=NOW), hostname="relay.test", x_message_id="XMid-1_a", now=NOW,
                          **kw)


def parsed(out: Outgoing) -> EmailMessage:
    assert b"\n" not in out.body.replace(b"\r\n", b""), "CRLF line ends only"
    assert not has_long_line(out.body), "no line over 998 octets"
    msg = email.message_from_bytes(out.body, policy=policy.default)
    assert isinstance(msg, EmailMessage) and not msg.defects
    return msg


def full() -> dict[str, Any]:
    return doc(
        personalizations=[
            {"to": [{"email": "bob@dest.test", "name": "Bób Ünïcode"}, {"email": "ann@dest.test"}],
             "cc": [{"email": "carol@dest.test", "name": "Carol, \"C\""}], "bcc": [{"email": "dan@dest.test"}],
             "substitutions": {"-name-": "Bob", "-x-": "-name-"}, "custom_args": {"uid": "7"},
             "headers": {"X-Pers": "p", "X-Both": "personal"}},
            {"to": [{"email": "eve@dest.test"}], "subject": "Hi -name-", "substitutions": {"-name-": "Eve"},
             "send_at": int(NOW) + 3600, "from": {"email": "ops@sender.test", "name": "Ops"}},
        ],
        subject="Hello -name- — grüße", reply_to={"email": "help@sender.test", "name": "Help Desk"},
        content=[{"type": "text/plain", "value": "Dear -name- -x-,\nline two\n" + "long " * 100},
                 {"type": "text/html", "value": "<p>Dear -name-</p><img src=\"cid:logo\">"}],
        attachments=[{"content": base64.b64encode(BLOB).decode(), "filename": "data.bin"},
                     {"content": base64.b64encode(LOGO).decode(), "filename": "logo.png", "disposition": "inline",
                      "content_id": "logo"}],
        headers={"X-Both": "message", "List-Unsubscribe": "<https://sender.test/u/" + "a" * 150 + ">"},
        categories=["welcome", "eu"], custom_args={"campaign": "spring", "uid": "0"}, send_at=int(NOW) + 60,
    )


def test_one_message_per_personalization_with_envelope_tags_and_schedule() -> None:
    first, second = build(full())
    assert (first.mail_from, first.recipients) == ("alice@sender.test", [
        "bob@dest.test", "ann@dest.test", "carol@dest.test", "dan@dest.test"])
    assert (second.mail_from, second.recipients) == ("ops@sender.test", ["eve@dest.test"])
    assert (first.subject, second.subject) == ("Hello Bob — grüße", "Hi Eve")
    assert (first.message_id, second.message_id) == ("<XMid-1_a.0@relay.test>", "<XMid-1_a.1@relay.test>")
    assert first.tags == {"category": ["welcome", "eu"], "unique_args": {"campaign": "spring", "uid": "7"},
                          "x_message_id": "XMid-1_a"}
    assert second.tags["unique_args"] == {"campaign": "spring", "uid": "0"}
    assert (first.send_at, second.send_at) == (NOW + 60, NOW + 3600), "the personalization's over the message's"
    plain = build(doc())[0]
    assert plain.tags == {"x_message_id": "XMid-1_a"} and plain.send_at is None


def test_headers_structure_and_byte_exact_attachments() -> None:
    out = build(full())[0]
    msg = parsed(out)
    assert msg["Date"] == "Tue, 14 Nov 2023 22:13:20 +0000"
    assert (msg["From"].addresses[0].display_name, msg["From"].addresses[0].addr_spec) == ("Alice",
                                                                                          "alice@sender.test")
    assert [a.display_name for a in msg["To"].addresses] == ["Bób Ünïcode", ""]
    assert [a.display_name for a in msg["Cc"].addresses] == ['Carol, "C"']
    assert msg["Bcc"] is None and b"dan@dest.test" not in out.body, "Bcc is never written"
    assert str(msg["Reply-To"]) == "Help Desk <help@sender.test>"
    assert msg["Subject"] == "Hello Bob — grüße" and msg["Message-ID"] == "<XMid-1_a.0@relay.test>"
    assert msg["MIME-Version"] == "1.0" and msg["X-Pers"] == "p" and msg["X-Both"] == "personal"
    head = out.body.split(b"\r\n\r\n", 1)[0]
    assert head.isascii(), "8-bit names and subjects are RFC 2047 words"
    assert b"List-Unsubscribe: <https://sender.test/u/" + b"a" * 150 + b">\r\n" in head, "long tokens as written"
    assert [p.get_content_type() for p in msg.walk()] == [
        "multipart/mixed", "multipart/related", "multipart/alternative", "text/plain", "text/html", "image/png",
        "application/octet-stream"]
    related = next(p for p in msg.walk() if p.get_content_type() == "multipart/related")
    assert related.get_param("type") == "multipart/alternative"
    text, html, logo, blob = (p for p in msg.walk() if not p.is_multipart())
    assert text.get_content().replace("\r\n", "\n").rstrip("\n") == "Dear Bob -name-,\nline two\n" + "long " * 100
    assert html.get_content().strip() == '<p>Dear Bob</p><img src="cid:logo">'
    assert (logo["Content-ID"], logo.get_content_disposition(), logo.get_filename()) == ("<logo>", "inline",
                                                                                           "logo.png")
    assert logo.get_content() == LOGO
    assert (blob.get_content_disposition(), blob.get_filename()) == ("attachment", "data.bin")
    assert blob.get_content() == BLOB
    second = parsed(build(full())[1])
    assert second["From"].addresses[0].addr_spec == "ops@sender.test" and second["Cc"] is None


def test_substitutions_are_made_once_in_subject_and_content() -> None:
    out = build(full())[0]
    body = parsed(out).get_body(("plain",))
    assert body is not None and "Dear Bob -name-," in body.get_content()  # "-x-" -> "-name-", not again


def test_order_of_alternatives_is_sendgrids() -> None:
    data = doc(content=[{"type": "text/plain", "value": "t"}, {"type": "text/html", "value": "<b>h</b>"},
                        {"type": "text/x-amp-html", "value": "<amp/>"}])
    msg = parsed(build(data)[0])
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html", "text/x-amp-html"]
    only = parsed(build(doc())[0])
    assert only.get_content_type() == "text/plain" and only.get_content().strip() == "Hi"
    assert only["Content-Transfer-Encoding"] == "7bit"


def test_long_lines_8bit_text_and_control_characters_are_encoded() -> None:
    one_line_html = "<html><body>" + "<td>cell</td>" * 500 + "</body></html>"
    text = "Grüße\x00\x1b[31m bell\x07\n" + "\u2028 line sep"
    data = doc(content=[{"type": "text/plain", "value": text}, {"type": "text/html", "value": one_line_html}],
               subject="x" * 3000, headers={"X-Long": "y" * 3000, "In-Reply-To": "<" + "c" * 150 + "@x.test>"})
    out = build(data)[0]
    msg = parsed(out)
    plain, html = msg.iter_parts()
    assert plain["Content-Transfer-Encoding"] in ("quoted-printable", "base64")
    assert plain.get_content().replace("\r\n", "\n").rstrip("\n") == text
    assert html.get_content().rstrip("\r\n") == one_line_html
    assert b"\x00" not in out.body and b"\x1b" not in out.body
    assert msg["Subject"] == "x" * 3000 and msg["X-Long"] == "y" * 3000
    assert b"In-Reply-To: <" + b"c" * 150 + b"@x.test>\r\n" in out.body
    assert max(len(line) for line in out.body.split(b"\r\n")) <= 998


def test_a_requests_date_and_message_id_replace_ours() -> None:
    data = doc(headers={"Message-ID": "<own@sender.test>", "Date": "Mon, 1 Jan 2024 00:00:00 +0000",
                        "MIME-Version": "2.0", "X-A": "a"})
    out = build(data)[0]
    msg = parsed(out)
    assert out.message_id == "<own@sender.test>" and msg["Message-ID"] == "<own@sender.test>"
    assert b"\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n" in b"\r\n" + out.body and len(msg.get_all("Date")) == 1
    assert msg.get_all("MIME-Version") == ["1.0"]
    assert len(msg.get_all("Message-ID")) == 1


def test_footer_is_added() -> None:
    data = doc(content=[{"type": "text/plain", "value": "Body -n-"},
                        {"type": "text/html", "value": "<html><body><p>Body</p></body></html>"}],
               personalizations=[{"to": [{"email": "b@d.test"}], "substitutions": {"-n-": "N"}}],
               mail_settings={"footer": {"enable": True, "text": "Unsubscribe -n-", "html": "<p>Foot</p>"}})
    plain, html = parsed(build(data)[0]).iter_parts()
    assert plain.get_content().replace("\r\n", "\n").rstrip("\n") == "Body N\n\nUnsubscribe N"
    assert html.get_content().strip() == "<html><body><p>Body</p><p>Foot</p></body></html>"


def test_a_template_is_rendered_by_the_callers_renderer() -> None:
    data = doc(template_id="d-123", content=None, subject=None, personalizations=[
        {"to": [{"email": "b@d.test"}], "dynamic_template_data": {"name": "Bob"}},
        {"to": [{"email": "c@d.test"}], "dynamic_template_data": {"name": "Carol"}}])
    mail = parse_mail_send(data, now=NOW)
    with pytest.raises(MailSendError) as info:  # no templates yet: an unknown template, as SendGrid says
        build_messages(mail, hostname="relay.test", x_message_id="X", now=NOW)
    assert info.value.errors[0][:2] == (E.TEMPLATE_UNKNOWN.format(value="d-123"), "template_id")

    def render(i: int, p: Personalization) -> Rendered:
        name = (p.dynamic_template_data or {})["name"]
        return Rendered(f"Hi {name}", (Content("text/html", f"<p>{i}: {name}</p>"),))

    outs = build_messages(mail, hostname="relay.test", x_message_id="X", now=NOW, render=render)
    assert [o.subject for o in outs] == ["Hi Bob", "Hi Carol"]
    assert parsed(outs[1]).get_content().strip() == "<p>1: Carol</p>"

    def evil(i: int, p: Personalization) -> Rendered:
        return Rendered("Hi\r\nBcc: victim@x.test", (Content("text/plain", "x"),))

    with pytest.raises(MailSendError) as info:
        build_messages(mail, hostname="relay.test", x_message_id="X", now=NOW, render=evil)
    assert info.value.errors[0].field == "personalizations.0.dynamic_template_data"
    with pytest.raises(MailSendError):
        build_messages(mail, hostname="relay.test", x_message_id="X", now=NOW,
                       render=lambda i, p: Rendered("s", ()))


def test_message_id_needs_an_x_message_id_that_fits_one() -> None:
    mail = parse_mail_send(doc(), now=NOW)
    with pytest.raises(ValueError, match="X-Message-Id"):
        build_messages(mail, hostname="relay.test", x_message_id="a b>", now=NOW)


def test_a_thousand_personalizations_share_one_encoding_of_the_attachments() -> None:
    data = doc(personalizations=[{"to": [{"email": f"r{i}@dest.test"}]} for i in range(1000)],
               attachments=[{"content": base64.b64encode(LOGO).decode(), "filename": "l.bin"}])
    mail: MailSend = parse_mail_send(data, now=NOW)
    outs = build_messages(mail, hostname="relay.test", x_message_id="X", now=NOW)
    assert len(outs) == 1000 and len({o.message_id for o in outs}) == 1000
    assert parsed(outs[999])["To"].addresses[0].addr_spec == "r999@dest.test"
    assert next(parsed(outs[500]).iter_attachments()).get_content() == LOGO


# The fast paths (address fields and text parts written without the email package) against
# what the email package writes for the same input.

NAMES = ["", "Bob", "Bob Smith", "Smith, Bob", 'A "quoted" name', "back\\slash", "O'Brien", "a.b", " lead",
         "two  spaces", "tail ", "Bób", "=?utf-8?q?x?=", "x" * 80]
EMAILS = ["bob@dest.test", "first.last+tag@sub.dest.test", "o'reilly@dest.test", '"quoted local"@dest.test',
          "x@xn--bcher-kva.test"]  # a non-ASCII local part needs SMTPUTF8: refused before this


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("addr", EMAILS)
def test_an_address_field_reads_back_as_the_email_package_reads_its_own(name: str, addr: str) -> None:
    from email.headerregistry import Address as HeaderAddress

    from mailrelay.submission.v3mail import Address
    from mailrelay.submission.v3mime import _addresses

    ours = _addresses("To", [Address(addr, name or None), Address("ann@dest.test", None)])
    header = policy.SMTP.header_store_parse("To", [HeaderAddress(display_name=name, addr_spec=addr),
                                                   HeaderAddress(addr_spec="ann@dest.test")])[1]
    theirs = policy.SMTP.fold_binary("To", header)
    assert ours.endswith(b"\r\n") and not has_long_line(ours)

    def read(raw: bytes) -> list[tuple[str, str]]:
        msg = email.message_from_bytes(raw + b"\r\n", policy=policy.default)
        assert not msg.defects
        return [(a.display_name, a.addr_spec) for a in msg["To"].addresses]

    assert read(ours) == read(theirs)


TEXTS = ["Hi", "hello\nworld\n", "héllo\r\n" * 3, "x" * 100 + "\n", "a\tb\x01c", "line\r\n.\r\nend", "",
         "tail space  \n", "=?x?=", "\u2603" * 200, "bare\rcr and\nlf", "<p>" + "word " * 60 + "</p>",
         "crlf at end\r\n", "= sign at end of a long line " + "y" * 60 + "=\n"]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("ctype", ["text/plain", "text/html"])
def test_a_text_part_is_byte_for_byte_what_the_email_package_writes(text: str, ctype: str) -> None:
    import binascii
    import io
    import re
    from email.generator import BytesGenerator
    from email.message import MIMEPart

    from mailrelay.submission.v3mime import _content_part

    # The email package's own writing of the part, as v3mime did before its fast path.
    norm = re.sub(r"\r\n|\r|\n", "\r\n", text)
    data = norm.encode("utf-8")
    if data.isascii() and not re.search(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", data) and all(
            len(x) <= 78 for x in data.split(b"\r\n")):
        cte, payload = "7bit", norm
    else:
        qp = binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)
        b64 = base64.encodebytes(data)
        cte, payload = ("quoted-printable", qp.decode()) if len(qp) <= len(b64) else ("base64", b64.decode())
    part = MIMEPart(policy=policy.SMTP)
    part["Content-Type"] = ctype
    part.set_param("charset", "utf-8")
    part["Content-Transfer-Encoding"] = cte
    part.set_payload(payload)
    out = io.BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=policy.SMTP).flatten(part)
    assert _content_part(Content(ctype, text)) == out.getvalue()
