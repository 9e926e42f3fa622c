"""The Inbound Parse form: one received message as SendGrid posts it, multipart/form-data.

Fields (non-raw): `headers`, `dkim`, `SPF`, `to`, `from`, `cc` (if any), `subject`, `text`,
`html`, `sender_ip`, `envelope` (JSON), `charsets` (JSON), `attachments` (a count),
`attachment-info` (JSON) and the files `attachment1`, `attachment2`, ... Raw mode sends the
whole message as received in `email` instead of `headers`, `text`, `html` and the attachments.
A message the email package cannot parse (its parser raises on some malformed header fields) is
sent in raw mode whatever the domain's setting (`Form.unparsed` says why): a receiver gets every
message once, rather than a message retried until it expires.

Every text field is sent as UTF-8 (bodies and headers are decoded first), so `charsets` names
UTF-8 for each: a receiver that decodes by `charsets`, as SendGrid's documentation advises, gets
the right text. Pure: no I/O; the encoder yields the body in pieces that refer to the parts'
own bytes, so a 30 MB message is not copied once more into one POST body.
"""

from __future__ import annotations

import email.policy
import json
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import Any

from mailrelay.core.headers import header_section

_PARSER = BytesParser(policy=email.policy.default)


@dataclass(frozen=True, slots=True)
class FilePart:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Form:
    """Fields in order (name, text or bytes), then files (field name, file)."""

    fields: list[tuple[str, str | bytes]]
    files: list[tuple[str, FilePart]] = field(default_factory=list)
    unparsed: str | None = None  # why a parsed-mode message is sent raw instead

    def value(self, name: str) -> str | bytes | None:
        return next((v for k, v in self.fields if k == name), None)


def headers_field(raw: bytes) -> bytes:
    """The header section of a message (core.headers.header_section) as the form sends it:
    its last line ended with CRLF."""
    section = header_section(raw)
    if section.endswith(b"\n") and not section.endswith(b"\r\n"):
        return section[:-1] + b"\r\n"
    return section


def dkim_field(auth: Mapping[str, Any]) -> str:
    """SendGrid's `dkim`: "{@example.com : pass}", one entry per signature; "none" without."""
    sigs = auth.get("dkim")
    if not isinstance(sigs, list) or not sigs:
        return "none"
    items = [f"@{s.get('domain') or '?'} : {s.get('result') or 'none'}" for s in sigs if isinstance(s, dict)]
    return "{" + ", ".join(items) + "}" if items else "none"


def spf_field(auth: Mapping[str, Any]) -> str:
    spf = auth.get("spf")
    return str(spf.get("result") or "none") if isinstance(spf, dict) else "none"


def build_form(raw: bytes, *, mail_from: str, rcpts: Sequence[str], auth: Mapping[str, Any],
               client_ip: str, raw_mode: bool) -> Form:
    """The form for one POST: `raw` is the message as stored (our trace and Authentication-
    Results prefix, then the message as received); `rcpts` its recipients at the domain."""
    sender_ip = str(auth.get("sender_ip") or client_ip)
    envelope = json.dumps({"to": list(rcpts), "from": mail_from})
    if not raw_mode:
        try:
            return _parsed_form(raw, auth=auth, sender_ip=sender_ip, envelope=envelope)
        except Exception as exc:  # the email package's parser raises on some malformed fields
            unparsed = f"could not parse the message: {type(exc).__name__}: {str(exc)[:200]}"
            return _raw_form(raw, auth=auth, sender_ip=sender_ip, envelope=envelope, unparsed=unparsed)
    return _raw_form(raw, auth=auth, sender_ip=sender_ip, envelope=envelope)


def _raw_form(raw: bytes, *, auth: Mapping[str, Any], sender_ip: str, envelope: str,
              unparsed: str | None = None) -> Form:
    """Raw mode: the whole message in `email`; only to, from and subject are read from it."""
    section = headers_field(raw)
    head = _PARSER.parsebytes(section, headersonly=True)
    fields: list[tuple[str, str | bytes]] = [
        ("dkim", dkim_field(auth)), ("SPF", spf_field(auth)), ("to", _header(head, "to", section)),
        ("from", _header(head, "from", section)), ("subject", _header(head, "subject", section)),
        ("sender_ip", sender_ip), ("envelope", envelope),
        ("charsets", json.dumps({k: "UTF-8" for k in ("to", "from", "subject")})), ("email", raw)]
    return Form(fields, unparsed=unparsed)


def _parsed_form(raw: bytes, *, auth: Mapping[str, Any], sender_ip: str, envelope: str) -> Form:
    """The parsed fields: headers, text, html, attachments."""
    msg = _PARSER.parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    text_part = msg.get_body(preferencelist=("plain",))
    html_part = msg.get_body(preferencelist=("html",))
    fields: list[tuple[str, str | bytes]] = [("headers", headers_field(raw).decode("utf-8", "replace")),
              ("dkim", dkim_field(auth)), ("SPF", spf_field(auth)),
              ("to", _header(msg, "to")), ("from", _header(msg, "from"))]
    if msg.get("cc") is not None:
        fields.append(("cc", _header(msg, "cc")))
    fields.append(("subject", _header(msg, "subject")))
    charsets = {name: "UTF-8" for name, _ in fields if name in ("to", "from", "cc", "subject")}
    for name, part in (("text", text_part), ("html", html_part)):
        if part is not None:
            fields.append((name, _text(part)))
            charsets[name] = "UTF-8"
    parts = list(_attachment_parts(msg, {id(text_part), id(html_part)}))
    files = [(f"attachment{n}", _file(part, n)) for n, part in enumerate(parts, 1)]
    info = {name: _info(f, part) for (name, f), part in zip(files, parts, strict=True)}
    fields += [("sender_ip", sender_ip), ("envelope", envelope), ("charsets", json.dumps(charsets)),
               ("attachments", str(len(files)))]
    if files:
        fields.append(("attachment-info", json.dumps(info)))
    return Form(fields, files)


def _header(msg: Message, name: str, section: bytes | None = None) -> str:
    """The decoded field; with `section` given, where the email package raises on the field,
    its value as written (unfolded, UTF-8 with replacement characters)."""
    if section is None:
        value = msg.get(name)
        return "" if value is None else str(value)
    try:
        return _header(msg, name)
    except Exception:
        return _written_value(section, name)


def _written_value(section: bytes, name: str) -> str:
    """The first `name` field of a header section as written, unfolded (RFC 5322 §2.2.3)."""
    prefix = name.lower().encode() + b":"
    value: list[bytes] | None = None
    for line in section.splitlines():
        if value is not None:
            if line[:1] not in (b" ", b"\t"):
                break
            value.append(line)
        elif line.lower().startswith(prefix):
            value = [line[len(prefix):]]
    return b"".join(value).strip().decode("utf-8", "replace") if value is not None else ""


def _text(part: Message) -> str:
    try:
        content = part.get_content()  # type: ignore[attr-defined]
    except (LookupError, ValueError, AssertionError):  # an unknown charset, a broken encoding
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return content if isinstance(content, str) else ""


def _attachment_parts(msg: Message, bodies: set[int]) -> Iterator[Message]:
    """Every leaf part that is not one of the two bodies and not another inline text part
    without a name (an alternative rendering); an attached message (message/rfc822) is one
    attachment, not walked into."""
    if msg.is_multipart() and msg.get_content_maintype() == "multipart":
        for sub in msg.get_payload():
            assert isinstance(sub, Message)
            yield from _attachment_parts(sub, bodies)
        return
    if id(msg) in bodies:
        return
    if (msg.get_content_type() in ("text/plain", "text/html") and not msg.get_filename()
            and msg.get_content_disposition() != "attachment"):
        return
    yield msg


def _file(part: Message, n: int) -> FilePart:
    """The decoded content of an attachment part."""
    if part.get_content_maintype() == "message":
        inner = part.get_payload()
        data = inner[0].as_bytes() if isinstance(inner, list) and inner and isinstance(inner[0], Message) else b""
    else:
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
    return FilePart(part.get_filename() or f"attachment{n}", part.get_content_type(), data)


def _info(f: FilePart, part: Message) -> dict[str, str]:
    out = {"filename": f.filename, "name": f.filename, "type": f.content_type}
    cid = part.get("content-id")
    if cid is not None:
        out["content-id"] = str(cid).strip().removeprefix("<").removesuffix(">")
    return out


# --- multipart/form-data (RFC 7578) ----------------------------------------------------------


def _quote(value: str) -> str:
    # RFC 7578 §4.2 / the HTML form encoding: quotes, CR and LF percent-encoded in names.
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def _utf8(text: str) -> bytes:
    """`text` as UTF-8, undecodable bytes (surrogateescape) as they were; any other lone
    surrogate (a UTF-7 or UTF-16 part can decode to one) becomes "?" rather than an error."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Encoded:
    content_type: str
    length: int
    chunks: tuple[bytes, ...]  # the body, in pieces (the big ones are the parts' own bytes)


def encode(form: Form, *, boundary: str | None = None) -> Encoded:
    """The multipart/form-data body of `form`."""
    b = boundary or secrets.token_hex(16)
    chunks: list[bytes] = []
    for name, value in form.fields:
        data = value if isinstance(value, bytes) else _utf8(value)
        chunks.append(f'--{b}\r\nContent-Disposition: form-data; name="{_quote(name)}"\r\n\r\n'.encode())
        chunks += [data, b"\r\n"]
    for name, f in form.files:
        head = (f'--{b}\r\nContent-Disposition: form-data; name="{_quote(name)}"; '
                f'filename="{_quote(f.filename)}"\r\nContent-Type: {_quote(f.content_type)}\r\n\r\n')
        chunks += [_utf8(head), f.data, b"\r\n"]
    chunks.append(f"--{b}--\r\n".encode())
    return Encoded(f"multipart/form-data; boundary={b}", sum(len(c) for c in chunks), tuple(chunks))
