"""DKIM at delivery time: sign with the keys of the From: domain when its account owns it and
has verified it (an added but unverified domain is neither signed for nor, under
submission.require_own_domain, accepted: `signing_domain` answers both).

The stored message is never rewritten: the signature is a header prefix made just before the
message is sent. Verified domains and loaded signers are cached (`cache_seconds`), so a message
costs one RSA signature (about 0.4 ms), not a database query and a key load. A From: domain not
in an account's cached set is looked up again if the set is over a second old, so a domain just
verified is usable at once, at most one query a second per account for mail from other domains.
While the database is away, what was last read goes on being used (read again a second later):
mail is signed as it was a moment ago rather than deferred or sent unsigned; with nothing read
yet, the outage is raised.
"""

from __future__ import annotations

import logging
import time

from mailrelay.accounts.domains import DomainService
from mailrelay.core.domains import owner_domain
from mailrelay.core.headers import from_domains
from mailrelay.mailauth.dkimsign import DKIMError, DKIMSigner
from mailrelay.store.health import is_unavailable

log = logging.getLogger("mailrelay.delivery")

MISS_REFRESH = 1.0  # seconds: a cached set this old is reloaded when it lacks the From: domain


class DomainSigner:
    """Callable `(account_id, message) -> DKIM-Signature header lines` (b"" when unsigned)."""

    def __init__(self, domains: DomainService, *, cache_seconds: float = 60.0) -> None:
        self.domains = domains
        self.cache_seconds = cache_seconds
        self._owned: dict[int, tuple[float, float, set[str]]] = {}  # expires, loaded, names
        self._signers: dict[str, tuple[float, DKIMSigner | None]] = {}

    def owned(self, account_id: int, *, older_than: float | None = None) -> set[str]:
        """The account's verified domains; reloaded when the cached set expired, or when
        it was loaded more than `older_than` seconds ago."""
        now = time.monotonic()
        hit = self._owned.get(account_id)
        if hit is None or hit[0] < now or (older_than is not None and hit[1] + older_than < now):
            try:
                hit = (now + self.cache_seconds, now, self.domains.verified_domains_of(account_id))
            except Exception as exc:
                if hit is None or not is_unavailable(exc):
                    raise
                hit = (now + MISS_REFRESH, now, hit[2])  # as last read; tried again in a second
            self._owned[account_id] = hit
        return hit[2]

    def signing_domain(self, account_id: int, data: bytes) -> str | None:
        """The verified domain of the account the first From: mailbox belongs to, if any."""
        found = from_domains(data)
        if not found:
            return None
        domain = owner_domain(self.owned(account_id), found[0])
        if domain is None:
            domain = owner_domain(self.owned(account_id, older_than=MISS_REFRESH), found[0])
        return domain

    def _signer(self, domain: str) -> DKIMSigner | None:
        now = time.monotonic()
        hit = self._signers.get(domain)
        if hit is None or hit[0] < now:
            try:
                keys = self.domains.signing_keys(domain)
            except Exception as exc:
                if hit is None or not is_unavailable(exc):
                    raise
                self._signers[domain] = (now + MISS_REFRESH, hit[1])  # as last read
                return hit[1]
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
