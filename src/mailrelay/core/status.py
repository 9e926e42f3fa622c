"""Every recipient status and event type, in one place.

Recipient statuses are stored as these strings (`recipients.status`). Mail we send is `queued`,
then `deferred` while it is retried (both pending: the delivery agent claims them), and ends
`delivered`, `bounced`, `expired` or `dropped` (final); a sandbox account's mail is `captured`
instead, until released (back to `queued`). Received mail is `inbound` while it waits for its
domain's parse webhook, then `posted` or `expired`; with no webhook it is `kept`.

Event types: each row of the event log has one. Those in `POSTED_EVENTS` change a recipient's
state and go to the account's event webhook; the rest (suppression-added, bounce-queued,
delay-warning, operator retries and deletes) are bookkeeping and stay in the log. `EVENT_NAMES`
gives each posted type its name on the webhook, `SENDGRID_EVENTS` the names an account can
switch off (as SendGrid's event webhook settings).
"""

from __future__ import annotations

from typing import Final

# Recipient statuses: mail we send.
QUEUED: Final = "queued"  # accepted, not tried yet (or released from the sandbox)
DEFERRED: Final = "deferred"  # tried, failed temporarily: retried at next_attempt_at
DELIVERED: Final = "delivered"
BOUNCED: Final = "bounced"  # failed permanently (or bounced by an operator)
EXPIRED: Final = "expired"  # retried for max_lifetime (received mail: max_age) and given up
DROPPED: Final = "dropped"  # on the account's suppression list: never sent
CAPTURED: Final = "captured"  # a sandbox account's mail: kept for the inbox, not sent
# Recipient statuses: mail we receive.
INBOUND: Final = "inbound"  # to be posted to its domain's parse webhook
POSTED: Final = "posted"  # the parse webhook answered 2xx
KEPT: Final = "kept"  # the domain has no parse webhook: kept in the account's inbox

PENDING: Final = (QUEUED, DEFERRED)  # waiting for the delivery agent
FINAL: Final = (DELIVERED, BOUNCED, EXPIRED, DROPPED)  # where a delivery attempt can end for good
OUTBOUND: Final = (QUEUED, DEFERRED, DELIVERED, BOUNCED, EXPIRED, DROPPED, CAPTURED)  # in display order
RECEIVED: Final = (KEPT, INBOUND, POSTED, EXPIRED)  # received mail's, all shown in the inbox

# Event types. A delivery attempt's event is named after the recipient's new status (DEFERRED,
# DELIVERED, BOUNCED, EXPIRED, DROPPED, CAPTURED above); these are the others.
EV_PROCESSED: Final = "processed"  # accepted into the queue, one per recipient
EV_RELEASED: Final = "released"  # a sandbox capture sent for real
EV_DELAY_WARNING: Final = "delay-warning"  # a "delayed" DSN went to the sender
EV_BOUNCE_QUEUED: Final = "bounce-queued"  # a DSN was queued for the sender
EV_SUPPRESSION_ADDED: Final = "suppression-added"
EV_SUPPRESSION_REMOVED: Final = "suppression-removed"
EV_BOUNCED_BY_OPERATOR: Final = "bounced-by-operator"
EV_RETRIED_BY_OPERATOR: Final = "retried-by-operator"
EV_DELETED_BY_OPERATOR: Final = "deleted-by-operator"
EV_INBOUND_RECEIVED: Final = "inbound-received"
EV_INBOUND_POSTED: Final = "inbound-posted"
EV_INBOUND_DEFERRED: Final = "inbound-deferred"  # the parse webhook failed; retried later
EV_INBOUND_EXPIRED: Final = "inbound-expired"
EV_INBOUND_KEPT: Final = "inbound-kept"

# Event types posted to the event webhook (events.payload names each in SendGrid's terms).
POSTED_EVENTS: Final = frozenset({
    EV_PROCESSED, DEFERRED, DELIVERED, BOUNCED, EXPIRED, EV_BOUNCED_BY_OPERATOR, DROPPED,
    CAPTURED, EV_RELEASED,
    # received mail and the domain's parse webhook
    EV_INBOUND_POSTED, EV_INBOUND_DEFERRED, EV_INBOUND_EXPIRED, EV_INBOUND_KEPT, EV_INBOUND_RECEIVED,
})

# Each posted type's `event` name on the webhook: SendGrid's where one fits (bounced, expired and
# bounced-by-operator are all `bounce`, told apart by the payload's `type`); captured, released
# (sandbox) and received mail's keep our own names.
EVENT_NAMES: Final = {
    EV_PROCESSED: "processed",
    DEFERRED: "deferred",
    DELIVERED: "delivered",
    BOUNCED: "bounce",
    EXPIRED: "bounce",
    EV_BOUNCED_BY_OPERATOR: "bounce",
    DROPPED: "dropped",
    CAPTURED: "captured",
    EV_RELEASED: "released",
    EV_INBOUND_POSTED: EV_INBOUND_POSTED, EV_INBOUND_DEFERRED: EV_INBOUND_DEFERRED,
    EV_INBOUND_EXPIRED: EV_INBOUND_EXPIRED, EV_INBOUND_KEPT: EV_INBOUND_KEPT,
    EV_INBOUND_RECEIVED: EV_INBOUND_RECEIVED,
}

# SendGrid's event webhook switches, one per event name it posts (its settings' booleans): an
# account's `webhook_events` lists the ones on. Names of ours (captured, inbound-*) have no
# switch: they are posted whenever the webhook is.
SENDGRID_EVENTS: Final = ("processed", "dropped", "deferred", "delivered", "bounce", "open", "click",
                          "spam_report", "unsubscribe", "group_unsubscribe", "group_resubscribe")
