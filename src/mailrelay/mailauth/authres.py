"""The Authentication-Results header field (RFC 8601): rendering ours, removing forged ones.

`authentication_results` renders SPF, DKIM (one resinfo per signature, `dkim=none` when there
are none), DMARC and iprev as one folded field to prepend. `strip_forged` removes every existing
Authentication-Results field that claims our authserv-id (RFC 8601 §5), touching nothing else.

Security: every value shown comes from the message or DNS (d=, selectors, domains). Values are
quoted and comments escaped per RFC 8601 §2.2 and control characters dropped, so none can end
the field, start another, or fake a resinfo.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mailrelay.core.headers import header_section
from mailrelay.mailauth.dkimverify import DKIMResult
from mailrelay.mailauth.dmarc import DMARCResult

LINE_LENGTH = 78  # RFC 5322 §2.1.1: lines SHOULD be at most 78 characters
MAX_COMMENT = 120

# RFC 2045 §5.1 token: printable ASCII except SPACE and tspecials.
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+\Z")
# RFC 8601 §2.2 pvalue also takes [[local-part] "@"] domain-name unquoted.
_ADDRESS = re.compile(r"(?:[!#$%&'*+\-/=?^_`{|}~0-9A-Za-z.]*@)?[0-9A-Za-z](?:[0-9A-Za-z.-]*[0-9A-Za-z])?\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_FIELD_NAME = re.compile(rb"authentication-results[ \t]*:", re.IGNORECASE)
_LINE = re.compile(rb"[^\n]*\n|[^\n]+")


def authentication_results(authserv_id: str, *, spf: tuple[str, str, str] | None,
                           dkim: Sequence[DKIMResult], dmarc: DMARCResult | None,
                           iprev: tuple[str, str, str] | None = None) -> bytes:
    """The folded, CRLF-ended `Authentication-Results:` field.

    `spf` is (result, identity, scope) with scope "mailfrom" or "helo"; `iprev` is (result,
    client IP, the name it resolved to or ""). Methods appear in the order iprev, spf, dkim,
    dmarc, so that each one's inputs come before it.
    """
    resinfos: list[list[str]] = []
    if iprev is not None:
        result, ip, name = iprev
        resinfos.append([f"iprev={_token(result)}", *_comment(name), f"policy.iprev={_value(ip)}"])
    if spf is not None:
        result, identity, scope = spf
        prop = "smtp.helo" if scope == "helo" else "smtp.mailfrom"
        resinfos.append([f"spf={_token(result)}", f"{prop}={_value(identity)}"])
    for sig in dkim:
        words = [f"dkim={_token(sig.result)}", *_comment(sig.comment), f"header.d={_value(sig.domain)}"]
        if sig.identity:
            words.append(f"header.i={_value(sig.identity)}")
        words.append(f"header.s={_value(sig.selector)}")
        if sig.header_b:
            words.append(f"header.b={_value(sig.header_b)}")
        resinfos.append(words)
    if not dkim:
        resinfos.append(["dkim=none"])
    if dmarc is not None:
        notes = "; ".join(n for n in (f"p={dmarc.policy}" if dmarc.policy else "", dmarc.comment) if n)
        words = [f"dmarc={_token(dmarc.result)}", *_comment(notes)]
        if dmarc.from_domain:
            words.append(f"header.from={_value(dmarc.from_domain)}")
        resinfos.append(words)
    return _fold(f"Authentication-Results: {_value(authserv_id)}", resinfos).encode("utf-8") + b"\r\n"


def _fold(first: str, resinfos: list[list[str]]) -> str:
    """`first;` then the resinfos separated by ";", each kept on one line when it fits."""
    lines = [first + (";" if resinfos else "; none")]
    for i, words in enumerate(resinfos):
        words = [*words[:-1], words[-1] + (";" if i < len(resinfos) - 1 else "")]
        whole = " ".join(words)
        if len(lines[-1]) + 1 + len(whole) <= LINE_LENGTH:
            lines[-1] += " " + whole
            continue
        lines.append("")
        for word in words:
            if lines[-1] and len(lines[-1]) + 1 + len(word) > LINE_LENGTH:
                lines.append("")
            lines[-1] += " " + word  # a continuation line starts with white space
    return "\r\n".join(lines)


def _token(text: str) -> str:
    return text if _TOKEN.match(text) else _quoted(text)


def _value(text: str) -> str:
    """RFC 8601 pvalue: a token, an address or domain as is, otherwise a quoted-string."""
    return text if _TOKEN.match(text) or _ADDRESS.match(text) else _quoted(text)


def _quoted(text: str) -> str:
    text = _CONTROL.sub("", text)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment(text: str) -> list[str]:
    """A comment word, "(...)", with parentheses and backslashes escaped; [] when empty."""
    text = _CONTROL.sub(" ", text).strip()[:MAX_COMMENT]
    if not text:
        return []
    return ["(" + re.sub(r"([()\\])", r"\\\1", text) + ")"]


# -- removing forged fields --------------------------------------------------------------------


def strip_forged(message: bytes, authserv_id: str) -> bytes:
    """`message` without the Authentication-Results fields whose authserv-id is ours
    (case-insensitive); every other byte is kept, and `message` itself is returned when there
    is nothing to remove. Only the header section is scanned."""
    head = header_section(message)
    if not re.search(rb"(?im)^authentication-results[ \t]*:", head):
        return message
    ours = _id_key(authserv_id.encode("utf-8"))
    kept: list[bytes] = []
    removed = False
    for field in _fields(head):
        if _FIELD_NAME.match(field) and _id_key(_authserv_id(field[field.index(b":") + 1:])) == ours:
            removed = True
            continue
        kept.append(field)
    if not removed:
        return message
    return b"".join(kept) + message[len(head):]


def strip_fields(message: bytes, name: bytes) -> bytes:
    """`message` without any header field called `name` (case-insensitive), continuation
    lines included; for headers only we may add, such as our quarantine mark."""
    head = header_section(message)
    pattern = re.compile(rb"(?i)" + re.escape(name) + rb"[ \t]*:")
    if not re.search(rb"(?im)^" + re.escape(name) + rb"[ \t]*:", head):
        return message
    kept = [field for field in _fields(head) if not pattern.match(field)]
    return b"".join(kept) + message[len(head):]


def _fields(head: bytes) -> list[bytes]:
    """Header fields with their continuation lines and line endings, byte for byte."""
    fields: list[bytes] = []
    for line in _LINE.findall(head):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def _authserv_id(value: bytes) -> bytes:
    """The authserv-id at the start of an Authentication-Results value (RFC 8601 §2.2), after
    any CFWS; a quoted-string is unquoted."""
    i, n = 0, len(value)
    while i < n:  # skip whitespace, line breaks and (nested) comments
        c = value[i:i + 1]
        if c in b" \t\r\n":
            i += 1
        elif c == b"(":
            depth = 0
            while i < n:
                c = value[i:i + 1]
                if c == b"\\":
                    i += 1
                elif c == b"(":
                    depth += 1
                elif c == b")":
                    depth -= 1
                    if depth == 0:
                        i += 1
                        break
                i += 1
        else:
            break
    if value[i:i + 1] == b'"':
        out = bytearray()
        i += 1
        while i < n and value[i:i + 1] != b'"':
            if value[i:i + 1] == b"\\":
                i += 1
            if value[i:i + 1] not in (b"\r", b"\n"):
                out += value[i:i + 1]
            i += 1
        return bytes(out)
    m = re.match(rb"[^\s;()]*", value[i:])
    return m.group(0) if m else b""


def _id_key(authserv_id: bytes) -> bytes:
    return authserv_id.strip().rstrip(b".").lower()
