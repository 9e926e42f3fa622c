"""Received mail in the account's inbox: mail for its inbound domains (`direction` "in").

Received mail is in the inbox whatever became of it: `kept` (the domain has no parse webhook),
`inbound` (waiting to be posted), `posted` or `expired`; an entry lists all its recipients and
its `kind` is "in". `clear` deletes it, but not mail with a recipient still waiting for its
parse webhook (the inbound dispatcher may hold it). The view itself (account scope, search,
`NoSuchCapture` for an unknown id) is sandbox.inbox's `MessageBox`; `mailrelay inbox` shows
this box beside the sandbox's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mailrelay.core.status import INBOUND, PENDING, RECEIVED
from mailrelay.sandbox.inbox import InboxEntry, MessageBox
from mailrelay.store.bodies import Content
from mailrelay.store.schema import messages


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    entry: InboxEntry
    data: bytes  # trace headers + body, as stored
    auth: str | None  # the Authentication-Results we added, if recorded
    signature: bytes = b""  # received mail is never signed by us

    @property
    def raw(self) -> bytes:
        """The message as received (with our trace header fields)."""
        return self.data


class Mailbox(MessageBox[ReceivedMessage]):
    kind = "in"
    selects = messages.c.direction == "in"
    listed = RECEIVED
    waiting = (*PENDING, INBOUND)

    def _message(self, entry: InboxEntry, row: Any) -> ReceivedMessage:
        return ReceivedMessage(entry, Content.of(row).data, _auth_results(row.auth))


def _auth_results(text: str | None) -> str | None:
    """The Authentication-Results header value recorded for received mail, if any."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return None
    found = value.get("authentication_results") if isinstance(value, dict) else None
    return found if isinstance(found, str) else None
