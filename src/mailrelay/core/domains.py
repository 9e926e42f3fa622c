"""Domain names and addresses as mailrelay compares and stores them: the one set of rules.

Three strengths, for three sources of names:

- `normalize_domain`: a name an operator configures (a sender or inbound domain, an address to
  accept): A-labels, lower case, no trailing dot, or `DomainError` saying what is wrong.
- `lenient_domain`: a name read from mail (a From domain, a DKIM d=) to compare; never an
  error: A-labels when the name can be encoded, else the name as given.
- `bare_domain`: lower case without trailing dots, nothing more (names from DNS or a client).

`split_address` is the strict split of `user@example.com`; the routing domain of an envelope
path is `core.address.domain_of`. Ownership: a domain owns its subdomains (`owner_domain`).
"""

from __future__ import annotations

from collections.abc import Iterable

from mailrelay.core.address import MAX_LOCAL_PART

# RFC 5894 §4.1: characters IDNA 2003 maps away but IDNA 2008 keeps (ß → ss, ...): the
# stdlib codec would silently name a different domain, so these must be given as A-labels.
_DEVIATIONS = frozenset("\u00df\u03c2\u200c\u200d")


class DomainError(Exception):
    """A user mistake about domains or addresses; the message says what was wrong."""


def normalize_domain(name: str) -> str:
    """`name` as A-labels, lower case, without a trailing dot; or DomainError."""
    text = name.strip()
    shown = text[:80]
    if text.endswith("."):
        text = text[:-1]
    if not text or any(c in _DEVIATIONS for c in text):
        if text:
            raise DomainError(f"domain {shown!r} contains ß, ς or a zero-width joiner, which IDNA "
                              "versions treat differently: give its xn-- form")
        raise DomainError("empty domain name")
    try:
        ascii_name = text.encode("idna").decode("ascii") if not text.isascii() else text
    except UnicodeError:
        raise DomainError(f"invalid domain {shown!r}: not a valid internationalized name") from None
    ascii_name = ascii_name.lower()
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or len(labels) < 2 or not all(_label_ok(label) for label in labels):
        raise DomainError(f"invalid domain {shown!r}: expected a name such as example.com "
                          "(labels of letters, digits and hyphens, at most 63 characters each)")
    if labels[-1].isdigit():
        raise DomainError(f"invalid domain {shown!r}: an IP address is not a domain")
    return ascii_name


def _label_ok(label: str) -> bool:
    return (0 < len(label) <= 63 and not label.startswith("-") and not label.endswith("-")
            and all(c.isascii() and (c.isalnum() or c == "-") for c in label))


def lenient_domain(name: str) -> str:
    """Lower case, no trailing dot, A-labels (DKIM d= is in A-labels, an EAI From may not be);
    a name the IDNA codec refuses is returned as it is, for comparisons to fail on."""
    name = name.strip().rstrip(".").lower()
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return name


def bare_domain(name: str) -> str:
    """`name` lower case without trailing dots: the form DNS names are compared in."""
    return name.lower().rstrip(".")


def split_address(address: str) -> tuple[str, str]:
    """(local part lower case, domain as A-labels) of `user@example.com`, or DomainError."""
    text = address.strip()
    local, at, domain = text.rpartition("@")
    if not at or not local:
        raise DomainError(f"invalid address {text[:80]!r}: expected user@example.com")
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        raise DomainError(f"invalid address {text[:80]!r}: the part before @ is over "
                          f"{MAX_LOCAL_PART} bytes")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 or c in '"<>@\\,;' for c in local) \
            or local.startswith(".") or local.endswith(".") or ".." in local:
        raise DomainError(f"invalid address {text[:80]!r}: use a plain local part "
                          "(letters, digits and . _ - + ...)")
    return local.lower(), normalize_domain(domain)


def parent_domains(name: str) -> list[str]:
    """The parents of `name` that could be owned: news.example.com → [example.com]."""
    labels = name.split(".")
    return [".".join(labels[i:]) for i in range(1, len(labels) - 1)]


def owner_domain(owned: Iterable[str], name: str) -> str | None:
    """The most specific of `owned` that is `name` or a parent of it, or None."""
    owned_set = owned if isinstance(owned, set | frozenset) else set(owned)
    name = bare_domain(name)
    for candidate in [name, *parent_domains(name)]:
        if candidate in owned_set:
            return candidate
    return None
