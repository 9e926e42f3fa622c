"""The Inbound Parse form, pure: SendGrid's dkim/SPF fields, bodies and attachments picked from
the MIME tree, raw mode, and the multipart/form-data encoding read back by the stdlib."""

from __future__ import annotations

import json
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy

from mailrelay.inbound.parse import FilePart, Form, build_form, dkim_field, encode, headers_field, spf_field


def _form(raw: bytes, **kw: object) -> Form:
    args: dict[str, object] = {"mail_from": "a@b.test", "rcpts": ["x@in.test"], "auth": {},
                               "client_ip": "192.0.2.1", "raw_mode": False} | kw
    return build_form(raw, **args)  # type: ignore[arg-type]


def test_dkim_and_spf_fields_in_sendgrids_shape() -> None:
    assert dkim_field({}) == "none" and spf_field({}) == "none"
    assert dkim_field({"dkim": [{"result": "pass", "domain": "a.test"}]}) == "{@a.test : pass}"
    assert dkim_field({"dkim": [{"domain": "a.test"}, "junk"]}) == "{@a.test : none}"
    assert spf_field({"spf": {"result": "softfail"}}) == "softfail" and spf_field({"spf": "x"}) == "none"


def test_headers_field_stops_at_the_first_empty_line() -> None:
    assert headers_field(b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore") == b"A: 1\r\nB: 2\r\n"
    assert headers_field(b"A: 1\n\nbody") == b"A: 1\r\n"


def test_plain_message_without_html_or_attachments() -> None:
    form = _form(b"From: a@b.test\r\nTo: x@in.test\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\r\nhello\r\n")
    assert form.value("subject") == "café" and form.value("text") == "hello\r\n"
    assert form.value("html") is None and form.value("cc") is None and form.value("attachment-info") is None
    assert form.value("attachments") == "0" and form.files == []
    assert form.value("sender_ip") == "192.0.2.1"  # no sender_ip in the auth results: the client's
    assert json.loads(str(form.value("charsets"))) == {"to": "UTF-8", "from": "UTF-8", "subject": "UTF-8",
                                                       "text": "UTF-8"}


def test_attached_message_and_unnamed_parts_are_attachments() -> None:
    inner = EmailMessage()
    inner["Subject"] = "forwarded"
    inner.set_content("inner body\n")
    msg = EmailMessage()
    msg["Subject"] = "fwd"
    msg.set_content("outer\n")
    msg.add_attachment(inner)
    msg.add_attachment(b"\x00\x01", maintype="image", subtype="png")  # no filename
    form = _form(msg.as_bytes())
    assert form.value("text") == "outer\n" and form.value("attachments") == "2"
    (n1, f1), (n2, f2) = form.files
    assert (n1, f1.content_type) == ("attachment1", "message/rfc822") and b"inner body" in f1.data
    assert (n2, f2) == ("attachment2", FilePart("attachment2", "image/png", b"\x00\x01"))


def test_raw_mode_parses_only_the_headers() -> None:
    raw = b"To: x@in.test\r\nFrom: a@b.test\r\nSubject: hi\r\n\r\n" + b"\xff" * 1000
    form = _form(raw, raw_mode=True)
    assert form.value("email") is raw and form.value("subject") == "hi" and form.value("text") is None


def test_encoding_round_trips_through_the_stdlib_parser() -> None:
    form = Form([("name\"with\r\nodd", "vålue"), ("bin", b"\xff\x00\r\n")],
                [("attachment1", FilePart('re"port.pdf', "application/pdf", b"%PDF\r\n--x"))])
    enc = encode(form, boundary="BOUNDARY")
    body = b"".join(enc.chunks)
    assert enc.length == len(body) and enc.content_type == "multipart/form-data; boundary=BOUNDARY"
    msg = BytesParser(policy=default_policy).parsebytes(b"Content-Type: " + enc.content_type.encode()
                                                        + b"\r\n\r\n" + body)
    parts = list(msg.iter_parts())
    assert [p.get_param("name", header="content-disposition") for p in parts] == [
        "name%22with%0D%0Aodd", "bin", "attachment1"]
    assert [p.get_payload(decode=True) for p in parts] == ["vålue".encode(), b"\xff\x00\r\n", b"%PDF\r\n--x"]
    assert parts[2].get_filename() == "re%22port.pdf" and parts[2].get_content_type() == "application/pdf"


def test_a_message_the_email_package_cannot_parse_becomes_a_raw_form() -> None:
    # Each raises inside the email package's address parser (IndexError, AttributeError).
    for to in (b'"', b"<", b"g:;@", b"a@["):
        raw = b"From: a@b.test\r\nTo: " + to + b"\r\nSubject: hi\r\n there\r\n\r\nbody\r\n"
        form = _form(raw)
        assert form.unparsed is not None and form.unparsed.startswith("could not parse the message: "), to
        assert form.value("email") == raw and form.files == [] and form.value("text") is None
        # the field as written where it cannot be decoded; folded lines unfolded (RFC 5322 §2.2.3)
        assert (form.value("to"), form.value("from"), form.value("subject")) == (to.decode(), "a@b.test", "hi there")
    assert _form(b"To: x@in.test\r\n\r\nhello\r\n").unparsed is None
    assert _form(b'To: "\r\n\r\nhello\r\n', raw_mode=True).value("to") == '"', "raw mode too"
