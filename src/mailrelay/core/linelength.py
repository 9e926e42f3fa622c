"""Fitting a message to the 998-octet line limit, for the copy that is signed and sent.

RFC 5321 §4.5.3.1.6 and RFC 5322 §2.1.1: a line is at most 998 octets, its CRLF not counted.
Applications that send minified HTML on one line are common, and SendGrid accepts their mail,
so mailrelay accepts it too; delivery sends (and DKIM-signs) `fit_lines(stored message)`, in
which each MIME part with a longer line is re-encoded so that it decodes to the same bytes:

- identity encodings (7bit, 8bit, binary, none) become quoted-printable, and the part's
  Content-Transfer-Encoding field says so (a non-MIME message also gets MIME-Version, and a
  Content-Type if it had none);
- base64 is re-wrapped at 76 characters, quoted-printable with long (invalid) lines is decoded
  and encoded again;
- message/rfc822 parts are walked into, their encoding never changed (RFC 2046 §5.2.1);
- header fields are folded at whitespace (RFC 5322 §2.2.3), which leaves their meaning as is;
- lines of a preamble or an epilogue, which readers ignore (RFC 2046 §5.1.1), are cut.

Every other octet stays as it was, and a message without a long line comes back as the very
same object. Some long lines cannot be fitted without changing what the message means, and
stay (`fit_lines(..., left=...)` names them): a part in an encoding other than the ones above
(x-uuencode, ...), a header field with over 998 octets without whitespace, a multipart body
without any delimiter line, and anything nested over 100 deep (Postfix's mime_nesting_limit).
The stored message is never rewritten (STYLE habit 8): this runs on the copy.

It runs on the delivery event loop, so no step may be quadratic: delimiters are found with
`bytes.find`, header lines are folded by index, and nesting is bounded. Line ends are CRLF, as
the SMTP session stores them. Pure: no I/O; also used by the sandbox inbox to show exactly
what delivery would send.
"""

from __future__ import annotations

import binascii
import email.message
import re

MAX_LINE = 998  # octets, without CRLF (RFC 5322 §2.1.1)
QP_LINE = 76  # base64 and quoted-printable line length (RFC 2045 §6.7, §6.8)
MAX_NESTING = 100  # entities nested deeper are left as they are (Postfix's mime_nesting_limit)
_IDENTITY = ("", "7bit", "8bit", "binary")  # no encoding: RFC 2045 §6.2
# A header field's first line, or a continuation line: what Python's email parser reads as a
# header line. Anything else before the empty line starts the body (a defect, but common).
_HEADER_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]*:|[ \t]")
_LINES = re.compile(rb"[^\n]*\n|[^\n]+")
# What may follow "--boundary" on a delimiter line (RFC 2046 §5.1.1): "--" for the close
# delimiter, then whitespace, then the line end, as Python's email package reads it.
_DELIMITER_END = re.compile(rb"(--)?[ \t]*\r?(?:\n|\Z)")
_WSP = re.compile(rb"[ \t]")
_NOT_WSP = re.compile(rb"[^ \t]")
CRLF = b"\r\n"


def has_long_line(data: bytes, start: int = 0, end: int | None = None) -> bool:
    """Whether a line of `data[start:end]` is over 998 octets (its CR LF not counted).

    One C-level `rfind` per window of 999 octets rather than a Python step per line: each
    window that holds a line end moves the start past its last one. About 0.5 µs for a 2 KB
    message and 0.2 ms for 1 MB (bench in the tests' docstring)."""
    n = len(data) if end is None else end
    pos = start
    rfind = data.rfind
    while n - pos > MAX_LINE:
        j = rfind(b"\n", pos, pos + MAX_LINE + 1)
        if j >= 0:  # every line ending in this window is at most 998 octets
            pos = j + 1
            continue
        # 999 octets from `pos` without LF: too long, unless the 999th is the CR of the line end
        cr = pos + MAX_LINE
        if data[cr] == 0x0D and (cr + 1 == n or data[cr + 1] == 0x0A):
            pos = cr + 2
            continue
        return True
    return False


def fit_lines(data: bytes, *, left: list[str] | None = None) -> bytes:
    """`data` itself if no line is over 998 octets; else the message re-encoded so none is,
    each part decoding to the same bytes as before, except what cannot be: `left`, if given,
    gets a short phrase for each kind of thing left with a long line ("unknown encoding
    x-uuencode"), each once."""
    if not has_long_line(data):
        return data
    pieces, _ = _fit_entity(data, 0, len(data), boundaries=(), default_type="text/plain", message=True, depth=0,
                            left=[] if left is None else left)
    return b"".join(pieces)


def _note(left: list[str], why: str) -> None:
    if why not in left:
        left.append(why)


def _printable(raw: bytes | str) -> str:
    """A short, printable rendering of a name from the message, for `left` (and so a log line)."""
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
    return "".join(c if c.isascii() and c.isprintable() else "?" for c in text[:64])


# --- one entity: header section, empty line, body ----------------------------------------------


def _split(data: bytes, start: int, n: int) -> tuple[list[bytes], bytes, int]:
    """(header lines with their line ends, the empty line, where the body starts) of the entity
    `data[start:n]`."""
    head: list[bytes] = []
    pos = start
    while pos < n:
        end = data.find(b"\n", pos, n)
        end = n if end < 0 else end + 1
        line = data[pos:end]
        if line in (CRLF, b"\n"):
            return head, line, end
        if not _HEADER_LINE.match(line):
            return head, b"", pos  # no empty line: the body starts here
        head.append(line)
        pos = end
    return head, b"", n


def _fields(head: list[bytes]) -> list[tuple[str, int, int]]:
    """(lower-case name, first line, end line) of each field: a first line and its continuations."""
    out: list[tuple[str, int, int]] = []
    for i, line in enumerate(head):
        if line[:1] in (b" ", b"\t") and out:
            name, first, _ = out[-1]
            out[-1] = (name, first, i + 1)
        else:
            out.append((line.split(b":", 1)[0].strip().decode("ascii", "replace").lower(), i, i + 1))
    return out


def _value(head: list[bytes], field: tuple[str, int, int]) -> str:
    """A field's value, unfolded, as Python's email package holds undecoded bytes."""
    raw = b"".join(head[field[1]:field[2]]).split(b":", 1)[1]
    return raw.replace(b"\r", b"").replace(b"\n", b"").strip().decode("ascii", "surrogateescape")


def _fit_entity(data: bytes, start: int, end: int, *, boundaries: tuple[bytes, ...], default_type: str,
                message: bool, depth: int, left: list[str]) -> tuple[list[bytes], bool]:
    """The entity `data[start:end]` fitted, as pieces to join, and whether a Content-Transfer-
    Encoding field was set in it (in it or its parts, not in an enclosed message, which has its
    own MIME-Version). `depth` is 0 for the message, one more for each multipart or enclosed
    message around the entity.

    Indices, not slices, and pieces joined once at the end: each level scans what it holds,
    but only a leaf, a header or what is left unchanged is copied, and each octet once."""
    if depth > MAX_NESTING:
        # Bounds the work (each level scans its body) and the recursion; such mail is not
        # legitimate (Postfix refuses it), so it is sent as it is.
        _note(left, f"MIME nesting over {MAX_NESTING}")
        return [data[start:end]], False
    head, sep, body_start = _split(data, start, end)
    fields = _fields(head)
    first: dict[str, tuple[str, int, int]] = {}
    for f in fields:
        first.setdefault(f[0], f)  # Python's email package reads the first field of a name
    ctype_msg = email.message.Message()
    ctype_msg.set_default_type(default_type)
    if "content-type" in first:
        ctype_msg["Content-Type"] = _value(head, first["content-type"])
    ctype = ctype_msg.get_content_type()
    cte = ""
    if "content-transfer-encoding" in first:
        cte = _value(head, first["content-transfer-encoding"]).split("(", 1)[0].strip().lower()

    set_cte = relabel = False
    boundary = _boundary(ctype_msg) if ctype.startswith("multipart/") else None
    body: list[bytes]
    payload = b""  # a leaf's body as it was
    if boundary is not None:
        part_type = "message/rfc822" if ctype == "multipart/digest" else "text/plain"  # RFC 2046 §5.1.5
        body, set_cte = _fit_multipart(data, body_start, end, boundary, (*boundaries, boundary), part_type,
                                       depth, left)
    elif ctype == "message/rfc822" and cte in _IDENTITY:  # an encoded one (not allowed) is a leaf below
        body = [data[body_start:end]]
        if has_long_line(data, body_start, end):
            body = _fit_entity(data, body_start, end, boundaries=boundaries, default_type="text/plain",
                               message=True, depth=depth + 1, left=left)[0]
    else:
        payload = data[body_start:end]
        body = [payload]
        if has_long_line(payload):
            body = [_fit_leaf(payload, cte, left)]
            relabel = cte in _IDENTITY


    added: list[bytes] = []
    if relabel:
        set_cte = True
        new = b"Content-Transfer-Encoding: quoted-printable" + CRLF
        ctes = [f for f in fields if f[0] == "content-transfer-encoding"]
        if ctes:  # in place of the first, the others dropped
            for _, start, end in reversed(ctes[1:]):
                del head[start:end]
            _, start, end = ctes[0]
            head[start:end] = [new]
        else:
            added.append(new)
    if message and set_cte and "mime-version" not in first:
        # The encoding means something only in a MIME message (RFC 2045 §4).
        added.append(b"MIME-Version: 1.0" + CRLF)
        if relabel and "content-type" not in first:
            added.append(b"Content-Type: " + _text_type(payload) + CRLF)
    name = b""
    for i, line in enumerate(head):
        if line[:1] not in (b" ", b"\t"):
            name = line[:line.find(b":")]  # _HEADER_LINE: a first line has a colon
        if has_long_line(line):
            head[i] = _fold(line)
            if has_long_line(head[i]):
                _note(left, f"unfoldable header {_printable(name.strip())}")
    if added:
        if head and not head[-1].endswith(b"\n"):
            head[-1] += CRLF
        head += added
        sep = sep or CRLF
    return [*head, sep, *body], set_cte


def _fit_leaf(payload: bytes, cte: str, left: list[str]) -> bytes:
    """A leaf part's body with a long line, re-encoded so that it decodes to the same bytes."""
    if cte in _IDENTITY:
        return _quoted_printable(payload)
    if cte == "quoted-printable":  # long lines are invalid QP (RFC 2045 §6.7 (5)): encode afresh
        return _quoted_printable(binascii.a2b_qp(payload))
    if cte == "base64":
        return _rewrap_base64(payload)
    # Any other encoding (x-uuencode, ...) cannot be re-encoded without changing what the part
    # decodes to: it is left as it is.
    _note(left, f"unknown encoding {_printable(cte)}")
    return payload


def _boundary(ctype_msg: email.message.Message) -> bytes | None:
    boundary = ctype_msg.get_boundary()
    if not boundary:
        return None  # a multipart without a boundary is read as text by Python's email package
    try:
        return boundary.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:  # an RFC 2231 boundary with non-ASCII characters: no part matches
        return None


def _text_type(payload: bytes) -> bytes:
    """RFC 2045 §5.2's default type, with the charset the text is evidently in (us-ascii is the
    default; 8-bit text that is valid UTF-8 is labelled so rather than read as us-ascii)."""
    if payload.isascii():
        return b"text/plain; charset=us-ascii"
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return b"text/plain"
    return b"text/plain; charset=utf-8"


# --- multipart ---------------------------------------------------------------------------------


def _delimiters(data: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int, bool]]:
    """(start, end after its line end, whether it is the close delimiter) of each delimiter line
    in `data[start:end]`: RFC 2046 §5.1.1's "--" boundary at a line start, "--" again for the
    last, optional whitespace. One C-level `find` per occurrence of the boundary, not a regex
    step per octet."""
    marker = b"--" + boundary
    out: list[tuple[int, int, bool]] = []
    pos = data.find(marker, start, end)
    while pos >= 0:
        if pos == start or data[pos - 1] == 0x0A:
            m = _DELIMITER_END.match(data, pos + len(marker), end)
            if m:
                out.append((pos, m.end(), m.group(1) is not None))
                if m.group(1):
                    break  # the rest is the epilogue
        pos = data.find(marker, pos + 1, end)
    return out


def _fit_multipart(data: bytes, start: int, end: int, boundary: bytes, boundaries: tuple[bytes, ...],
                   part_type: str, depth: int, left: list[str]) -> tuple[list[bytes], bool]:
    """The multipart body `data[start:end]` as pieces: each part with a long line fitted;
    delimiter lines, and parts without one, unchanged."""
    delims = _delimiters(data, start, end, boundary)
    if not delims:
        # No part at all: Python's email package (and other readers) then show the body as
        # text, so cutting its lines would change what they show; a broken multipart is left
        # as it is.
        if has_long_line(data, start, end):
            _note(left, "multipart without a delimiter line")
        return [data[start:end]], False
    out = [_fit_ignored(data[start:delims[0][0]])]
    changed = False
    for k, (begin, part_start, close) in enumerate(delims):
        out.append(data[begin:part_start])
        if close:  # the rest is the epilogue
            out.append(_fit_ignored(data[part_start:end]))
            break
        part_end = end
        tail = b""
        if k + 1 < len(delims):  # the line end before a delimiter belongs to the delimiter
            part_end = delims[k + 1][0]
            tail = (CRLF if data.endswith(CRLF, part_start, part_end)
                    else b"\n" if data.endswith(b"\n", part_start, part_end) else b"")
            part_end -= len(tail)
        if has_long_line(data, part_start, part_end):
            part, set_cte = _fit_entity(data, part_start, part_end, boundaries=boundaries, default_type=part_type,
                                        message=False, depth=depth + 1, left=left)
            changed = changed or set_cte
            out += part
        else:
            out.append(data[part_start:part_end])
        out.append(tail)
    return out, changed


def _fit_ignored(text: bytes) -> bytes:
    """A preamble or epilogue, which MIME readers ignore (RFC 2046 §5.1.1): long lines cut into
    pieces, each after the first starting with a space so that none can be read as a delimiter."""
    if not has_long_line(text):
        return text
    out = []
    for line in _LINES.findall(text):
        content, end = _cut_end(line)
        if len(content) > MAX_LINE:
            step = MAX_LINE - 1
            pieces = [content[:MAX_LINE]] + [b" " + content[i:i + step] for i in range(MAX_LINE, len(content), step)]
            line = CRLF.join(pieces) + end
        out.append(line)
    return b"".join(out)


def _cut_end(line: bytes) -> tuple[bytes, bytes]:
    """(content, line end), the line end being CRLF, LF, a final CR or nothing."""
    for end in (CRLF, b"\n", b"\r"):
        if line.endswith(end):
            return line[:-len(end)], end
    return line, b""


# --- encodings ---------------------------------------------------------------------------------


def _quoted_printable(payload: bytes) -> bytes:
    """`payload` as quoted-printable with CRLF line ends, decoding to exactly `payload`."""
    # Text mode keeps the line structure readable, but it keeps a lone CR or LF as it is and
    # turns one into the other: only when every line end is CRLF. Otherwise CR and LF are
    # encoded (=0D, =0A) and the lines are all soft breaks.
    text = payload.count(b"\n") == payload.count(CRLF) == payload.count(b"\r")
    encoded = binascii.b2a_qp(payload, quotetabs=False, istext=text, header=False)
    # binascii ends every line of its output alike: CRLF if the payload's first LF follows a CR,
    # else LF, with no other CR or LF left. Mail needs CRLF (RFC 5321 §2.3.8).
    if b"\r" not in encoded:
        encoded = encoded.replace(b"\n", CRLF)
    return _escape_dashes(encoded)


def _escape_dashes(encoded: bytes) -> bytes:
    """Quoted-printable text in which no line starts with "-", in lines of 76 at most.

    A soft break can start a line with "--boundary" of an enclosing multipart, and readers take
    a line that starts so for a delimiter, whatever follows (RFC 2046 §5.1.1 only says the
    boundary must not occur in the part): the part would end there. "=2D" is "-" (RFC 2045
    §6.7 (1)), so every line starting with "-" starts with "=2D" instead. A line then over 76
    octets (§6.7 (5)) is broken with a soft break, never inside an "=XX"; so is one of the 77
    that binascii writes for some bare LFs ("a\n" * 30)."""
    lines = encoded.split(CRLF)
    if not encoded.startswith(b"-") and b"\n-" not in encoded and max(map(len, lines)) <= QP_LINE:
        return encoded
    out: list[bytes] = []
    for line in lines:
        if line.startswith(b"-"):
            line = b"=2D" + line[1:]
        while len(line) > QP_LINE:
            cut = QP_LINE - 1
            if b"=" in line[cut - 2:cut]:  # an "=XX" would be cut: cut before it
                cut = line.rindex(b"=", cut - 2, cut)
            out.append(line[:cut] + b"=")
            line = line[cut:]
            if line.startswith(b"-"):
                line = b"=2D" + line[1:]
        out.append(line)
    return CRLF.join(out)


def _rewrap_base64(body: bytes) -> bytes:
    """The same base64 text in lines of 76 (RFC 2045 §6.8); decoders skip CR and LF, so the part
    decodes as before, even when it holds other stray characters."""
    flat = body.replace(b"\r", b"").replace(b"\n", b"")
    lines = [flat[i:i + QP_LINE] for i in range(0, len(flat), QP_LINE)]
    return CRLF.join(lines) + (CRLF if body.endswith(b"\n") else b"")


# --- header fields -----------------------------------------------------------------------------


def _fold(line: bytes) -> bytes:
    """A header line over 998 octets folded before whitespace (RFC 5322 §2.2.3), which
    unfolding undoes, so the field means the same. Each piece is at most 998 octets where the
    whitespace allows; a stretch of over 998 octets without whitespace cannot be folded (no
    other place is allowed) and stays as it is: such a field breaks RFC 5322 in any case."""
    content, end = _cut_end(line)
    n = len(content)
    # A folded line must not be only whitespace (RFC 5322 §3.2.2): no fold after the last
    # non-whitespace octet, and a continuation line's leading WSP is skipped before looking
    # for a place to fold.
    stop = len(content.rstrip(b" \t"))
    pieces: list[bytes] = []
    start = 0  # of the piece being cut; an index, not a slice, so a 30 MB line takes linear time
    while n - start > MAX_LINE:
        m = _NOT_WSP.search(content, start)
        if m is None:
            break
        lead = m.start()
        window = min(start + MAX_LINE + 1, stop)
        at = max(content.rfind(b" ", lead + 1, window), content.rfind(b"\t", lead + 1, window))
        if at < 0:  # no whitespace early enough: fold at the first one, the rest may still fit
            m = _WSP.search(content, lead + 1, stop)
            if m is None:
                break
            at = m.start()
        pieces.append(content[start:at])
        start = at
    pieces.append(content[start:])
    return CRLF.join(pieces) + end
