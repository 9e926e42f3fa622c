"""What the engine asks of a policy, and the state it shows it.

`Session` is the connection (peer, TLS, login) and outlives many `Transaction`s (sender,
recipients); RSET, a new EHLO or the end of DATA drop only the transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mailrelay.core import reply as R
from mailrelay.core.address import Path
from mailrelay.core.reply import Refusal, Reply

log = logging.getLogger("mailrelay.smtp")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who logged in: the name they used, and the policy's own object (an account)."""

    username: str
    principal: Any


@dataclass(slots=True)
class Session:
    listener: str
    peer_ip: str
    peer_port: int
    trusted: bool  # peer is in the listener's trusted networks
    helo: str = ""
    esmtp: bool = False
    tls_version: str | None = None
    tls_cipher: str | None = None
    identity: Identity | None = None


@dataclass(slots=True)
class Transaction:
    sender: Path
    recipients: list[Path] = field(default_factory=list)
    declared_size: int | None = None
    hold: Any = None  # the policy's own: what it keeps for this transaction (reserved quota, whose mail)

    @property
    def smtputf8(self) -> bool:
        return "SMTPUTF8" in self.sender.params


class Handler(Protocol):
    """The policy behind a listener. Refuse by raising `mailrelay.core.reply.Refusal`."""

    async def authenticate(self, session: Session, username: str, password: str) -> Identity | None:
        """Check credentials (off the event loop); None when they are wrong. A Refusal (454
        when they cannot be checked now) is the answer as it is; any other exception is 454
        with a traceback in the log."""

    def max_message_size(self, session: Session) -> int | None:
        """The largest message this session may send, when the policy knows one (a logged-in
        account's plan); None: only the server's limit. EHLO announces the smaller as SIZE.
        Runs on the event loop at every EHLO: no I/O, only what is known already."""

    def check_sender(self, session: Session, txn: Transaction) -> None:
        """MAIL FROM: raise Refusal to refuse the sender."""

    def check_recipient(self, session: Session, txn: Transaction, rcpt: Path) -> Awaitable[None] | None:
        """RCPT TO: raise Refusal to refuse this recipient (relay policy lives here). A check
        that needs I/O (a quota reservation) returns an awaitable instead, which raises
        Refusal or returns; the engine answers when it is done."""

    def abandon(self, session: Session, txn: Transaction) -> None:
        """A transaction with recipients ended without an accepted message (RSET, EHLO,
        STARTTLS, refused or failed DATA, a lost connection): give back what was held for it."""

    def accept(self, session: Session, txn: Transaction, body: bytes) -> Awaitable[Reply]:
        """End of DATA: store the message durably, then give the reply (250 with queue id)."""


def relay_denied(session: Session, rcpt: Path) -> Refusal:
    """The refusal of a recipient that no policy takes from this client (554 5.7.1: we are never
    an open relay), logged; a policy raises it."""
    log.info("relay denied from %s to <%s>", session.peer_ip, rcpt.address[:80],
             extra={"event": "relay_denied", "client_ip": session.peer_ip, "recipient": rcpt.address[:80]})
    return Refusal(R.RELAY_DENIED.with_text(f"<{rcpt.address[:80]}>: Relay access denied"))
