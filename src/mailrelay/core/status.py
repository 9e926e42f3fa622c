"""Every recipient status and event type, in one place.

Event types: each row of the event log has one. Those in `POSTED_EVENTS` change a recipient's
state and go to the account's event webhook; the rest (suppression-added, bounce-queued,
delay-warning, operator retries and deletes) are bookkeeping and stay in the log.
"""

from __future__ import annotations

# Event types posted to the event webhook (events.payload names each in SendGrid's terms).
POSTED_EVENTS = frozenset({
    "processed", "deferred", "delivered", "bounced", "expired", "bounced-by-operator", "dropped",
    "captured", "released",
    # received mail and the domain's parse webhook
    "inbound-posted", "inbound-deferred", "inbound-expired", "inbound-kept", "inbound-received",
})
