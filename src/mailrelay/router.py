"""Which policy answers a session: submission or inbound (the port-25 choice).

Every listener takes both kinds of mail. A session that logged in, or comes from the listener's
trusted networks, sends through us: mailrelay.submission.policy (accounts, plans, quota, the
spool). Any other session may only deliver mail for our own inbound domains:
mailrelay.inbound.receive (known addresses or catch-all, SPF/DKIM/DMARC, never relayed), and gets
554 5.7.1 for every other recipient, and for every recipient when receiving is off (no DNS).

The choice is made per session, at each step: whether a session sends cannot change inside a
transaction (AUTH is refused during one; STARTTLS forgets a login but drops the transaction
first). Free disk space is checked here, at every MAIL, for both kinds (Postfix's
queue_minfree: refuse before the data is sent rather than fail its commit at the end of DATA).
"""

from __future__ import annotations

from collections.abc import Awaitable

from mailrelay.core.address import Path
from mailrelay.core.reply import INSUFFICIENT_STORAGE, Refusal, Reply
from mailrelay.inbound.receive import InboundReceiver
from mailrelay.smtp.handler import Identity, Session, Transaction, relay_denied
from mailrelay.store.space import DiskSpace
from mailrelay.submission.policy import SubmissionPolicy


def sends(session: Session) -> bool:
    """A session that sends through us (submission): logged in, or from a trusted network."""
    return session.identity is not None or session.trusted


class PolicyRouter:
    """The Handler of every listener (see mailrelay.smtp.handler.Handler): each step goes to
    the submission policy for a session that sends, else to the inbound receiver."""

    def __init__(self, submission: SubmissionPolicy, inbound: InboundReceiver | None = None,
                 space: DiskSpace | None = None) -> None:
        self.submission = submission
        self.inbound = inbound  # None: no mail is received for our own domains
        self.space = space  # None: free space is not checked (PostgreSQL, storage.min_free = 0)

    async def authenticate(self, session: Session, username: str, password: str) -> Identity | None:
        # Logging in is what makes a session one that sends.
        return await self.submission.authenticate(session, username, password)

    def max_message_size(self, session: Session) -> int | None:
        # Received mail has no plan: the server's limit.
        return self.submission.max_message_size(session) if sends(session) else None

    def check_sender(self, session: Session, txn: Transaction) -> None:
        if sends(session):
            self.submission.check_sender(session, txn)
        if self.space is not None and not self.space.room_for(txn.declared_size or 0):
            raise Refusal(INSUFFICIENT_STORAGE)

    def check_recipient(self, session: Session, txn: Transaction, rcpt: Path) -> Awaitable[None] | None:
        if sends(session):
            return self.submission.check_recipient(session, txn, rcpt)
        if self.inbound is not None:
            return self.inbound.check_recipient(session, txn, rcpt)
        raise relay_denied(session, rcpt)

    def abandon(self, session: Session, txn: Transaction) -> None:
        # Only submission holds anything to give back (quota reserved at RCPT), and it looks at
        # the transaction, not the session: after STARTTLS the session no longer shows the
        # login that began the transaction it drops.
        self.submission.abandon(session, txn)

    def accept(self, session: Session, txn: Transaction, body: bytes) -> Awaitable[Reply]:
        if not sends(session) and self.inbound is not None:
            return self.inbound.accept(session, txn, body)
        return self.submission.accept(session, txn, body)
