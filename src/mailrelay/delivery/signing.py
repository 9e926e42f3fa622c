"""DKIM at delivery time: sign with the keys of the From: domain when its account owns it.

The stored message is never rewritten: the signature is a header prefix made just before the
message is sent. Owned domains and loaded signers are cached for a minute, so a message costs
one RSA signature (about 0.4 ms), not a database query and a key load.
"""

from __future__ import annotations

import logging
import time

from mailrelay.accounts.domains import DomainService
from mailrelay.core.domains import owner_domain
from mailrelay.core.headers import from_domains
from mailrelay.mailauth.dkimsign import DKIMError, DKIMSigner

log = logging.getLogger("mailrelay.delivery")


class DomainSigner:
    """Callable `(account_id, message) -> DKIM-Signature header lines` (b"" when unsigned)."""

    def __init__(self, domains: DomainService, *, cache_seconds: float = 60.0) -> None:
        self.domains = domains
        self.cache_seconds = cache_seconds
        self._owned: dict[int, tuple[float, set[str]]] = {}
        self._signers: dict[str, tuple[float, DKIMSigner | None]] = {}

    def owned(self, account_id: int) -> set[str]:
        now = time.monotonic()
        hit = self._owned.get(account_id)
        if hit is None or hit[0] < now:
            hit = (now + self.cache_seconds, self.domains.domains_of(account_id))
            self._owned[account_id] = hit
        return hit[1]

    def signing_domain(self, account_id: int, data: bytes) -> str | None:
        """The owned domain the first From: mailbox belongs to, if any."""
        found = from_domains(data)
        return owner_domain(self.owned(account_id), found[0]) if found else None

    def _signer(self, domain: str) -> DKIMSigner | None:
        now = time.monotonic()
        hit = self._signers.get(domain)
        if hit is None or hit[0] < now:
            keys = self.domains.signing_keys(domain)
            hit = (now + self.cache_seconds, DKIMSigner(keys) if keys else None)
            self._signers[domain] = hit
        return hit[1]

    def __call__(self, account_id: int, data: bytes) -> bytes:
        domain = self.signing_domain(account_id, data)
        if domain is None:
            return b""
        signer = self._signer(domain)
        if signer is None:
            return b""
        try:
            return signer.sign(data)
        except DKIMError as exc:  # an unparsable header section goes out unsigned, not lost
            log.warning("not DKIM-signing a message from %s: %s", domain, exc)
            return b""
