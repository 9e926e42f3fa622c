"""Envelope paths: parsing `MAIL FROM:<...>` / `RCPT TO:<...>` arguments (RFC 5321 §4.1.2).

Security: everything a client sends here may end up in a Received header or a log line, so
control characters (NUL, CR, LF, ...) are refused outright, not escaped. Source routes are
stripped (RFC 5321 §4.1.1.3 and Appendix C); the routing domain is always the text after the
last unquoted `@`, so percent hacks and bang paths never change where mail goes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailrelay.core import reply as R
from mailrelay.core.text import has_control_chars

# RFC 5321 §4.5.3.1: size limits of the parts of a path.
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\x80-\U0010ffff]"
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*\Z")
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\x80-\U0010ffff]|\\[\x20-\x7e])*"\Z')
_LABEL = re.compile(r"(?!-)[A-Za-z0-9\-\x80-\U0010ffff]{1,63}(?<!-)\Z")
_ADDR_LITERAL = re.compile(r"\[(?:IPv6:[0-9A-Fa-f:.]+|[0-9]{1,3}(?:\.[0-9]{1,3}){3})\]\Z")
_PARAM = re.compile(r"([A-Za-z0-9][A-Za-z0-9\-]*)(?:=([\x21-\x3c\x3e-\x7e\x80-\U0010ffff]+))?\Z")


@dataclass(frozen=True, slots=True)
class Path:
    """A parsed envelope address with its ESMTP parameters, e.g. SIZE or SMTPUTF8."""

    address: str  # "" for the null reverse-path
    params: dict[str, str | None]

    @property
    def domain(self) -> str:
        return domain_of(self.address)

    @property
    def local_part(self) -> str:
        return self.address.rpartition("@")[0]


def domain_of(address: str) -> str:
    """The routing domain of `address`: the text after its last @, lower case ("" for "")."""
    return address.rpartition("@")[2].lower()


def split_path_argument(arg: str, keyword: str) -> tuple[str, str] | None:
    """Split `FROM:<a@b> PARAMS` into ("a@b", "PARAMS"); None when the shape is wrong."""
    head, sep, rest = arg.partition(":")
    if not sep or head.strip().upper() != keyword:
        return None
    rest = rest.lstrip(" ")  # tolerate "MAIL FROM: <a@b>", as most servers do
    if not rest.startswith("<"):
        return None
    # Find the closing ">" outside a quoted local part.
    in_quote = escaped = False
    for i, ch in enumerate(rest):
        if escaped:
            escaped = False
        elif ch == "\\" and in_quote:
            escaped = True
        elif ch == '"':
            in_quote = not in_quote
        elif ch == ">" and not in_quote:
            return rest[1:i], rest[i + 1 :].strip(" ")
    return None


def parse_params(text: str) -> dict[str, str | None]:
    """ESMTP parameters `KEY[=VALUE]` separated by spaces (RFC 5321 §4.1.2); keys uppercased."""
    params: dict[str, str | None] = {}
    for token in text.split():
        m = _PARAM.match(token)
        if m is None:
            raise R.Refusal(R.PARAM_SYNTAX.with_text(f"Bad parameter syntax: {token[:40]}"))
        params[m.group(1).upper()] = m.group(2)
    return params


def strip_source_route(raw: str) -> str:
    """`@a,@b:user@c` → `user@c` (RFC 5321 §4.1.1.3: accept, ignore the route)."""
    if raw.startswith("@"):
        _, sep, rest = raw.partition(":")
        return rest if sep else ""
    return raw


def validate_mailbox(address: str, *, utf8: bool) -> bool:
    """True when `address` is `local@domain` per RFC 5321 §4.1.2 (RFC 6531 with utf8)."""
    if len(address.encode("utf-8")) > MAX_PATH:
        return False
    if not utf8 and not address.isascii():
        return False
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return False
    if len(local.encode("utf-8")) > MAX_LOCAL_PART or len(domain) > MAX_DOMAIN:
        return False
    if not (_DOT_ATOM.match(local) or _QUOTED.match(local)):
        return False
    if domain.startswith("["):
        return _ADDR_LITERAL.match(domain) is not None
    labels = domain.rstrip(".").split(".")
    return all(_LABEL.match(label) for label in labels)


def parse_path(arg: str, keyword: str, *, allow_null: bool) -> Path:
    """Parse the argument of MAIL (keyword "FROM") or RCPT ("TO"); raise Refusal if malformed."""
    bad = R.BAD_SENDER_SYNTAX if keyword == "FROM" else R.BAD_RCPT_SYNTAX
    if has_control_chars(arg):
        raise R.Refusal(bad.with_text("Control characters are not allowed in addresses"))
    parts = split_path_argument(arg, keyword)
    if parts is None:
        verb = "MAIL FROM" if keyword == "FROM" else "RCPT TO"
        raise R.Refusal(R.PARAM_SYNTAX.with_text(f"Syntax: {verb}:<address> [parameters]"))
    raw, param_text = parts
    params = parse_params(param_text)
    address = strip_source_route(raw)
    if address == "":
        if allow_null and raw == "":
            return Path("", params)
        raise R.Refusal(bad)
    utf8 = "SMTPUTF8" in params if keyword == "FROM" else True
    if not address.isascii() and not utf8:
        raise R.Refusal(R.SMTPUTF8_REQUIRED)
    if not validate_mailbox(address, utf8=True):
        raise R.Refusal(bad.with_text(f"{bad.text}: <{address[:80]}>"))
    return Path(address, params)
