"""Which mailbox provider runs a mail server, told by the suffix of its host name.

Every domain hosted by Google has MX hosts under google.com (aspmx.l.google.com,
smtp.google.com), every Microsoft 365 tenant under outlook.com (*.mail.protection.outlook.com),
and so on: the MX host, not the recipient's domain, says whose limits and reputation a delivery
meets. The names here label the delivery metrics; the list is the big providers whose MX
suffixes are stable and published, and anything else is "other".
"""

from __future__ import annotations

import functools

# provider -> MX host suffixes (a suffix matches itself and any name below it)
PROVIDERS: dict[str, tuple[str, ...]] = {
    "google": ("google.com", "googlemail.com"),
    "microsoft": ("outlook.com", "hotmail.com", "olc.protection.outlook.com"),
    "yahoo": ("yahoodns.net",),  # Yahoo and AOL
    "apple": ("icloud.com", "me.com"),
    "comcast": ("comcast.net",),
    "att": ("att.net", "prodigy.net"),
    "gmx": ("gmx.net", "web.de", "mail.com"),
    "zoho": ("zoho.com", "zoho.eu", "zohomail.com"),
    "proton": ("protonmail.ch",),
    "fastmail": ("messagingengine.com",),
    "yandex": ("yandex.net", "yandex.ru"),
    "mailru": ("mail.ru",),
}
OTHER = "other"
NONE = "none"  # no server answered: the failure came before any connection (DNS, policy)

_BY_SUFFIX = {suffix: name for name, suffixes in PROVIDERS.items() for suffix in suffixes}


@functools.lru_cache(maxsize=4096)
def provider_of(host: str | None) -> str:
    """The provider of MX host `host` (any case, trailing dot or not): a name of PROVIDERS,
    "other", or "none" for no host."""
    if not host:
        return NONE
    labels = host.lower().rstrip(".").split(".")
    for i in range(len(labels) - 1):  # the longest suffix first; a bare TLD never matches
        name = _BY_SUFFIX.get(".".join(labels[i:]))
        if name is not None:
            return name
    return OTHER
