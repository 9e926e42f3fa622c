"""`[webhooks]` and `[inbound]`: the two webhooks, events out and received mail in."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """The event webhook: batched POSTs from a durable outbox (the events table)."""

    batch_size: int = 100  # events per POST, at most
    timeout: float = 10.0  # seconds for one POST
    retry_first: float = 10.0  # first retry after a failed POST, doubling...
    retry_max: float = 600.0  # ...up to this
    max_age: float = 86_400.0  # give up on an event this long after it happened (24 h)
    max_concurrent: int = 10  # webhooks posted to at once
    # Event and inbound parse webhooks set through the API may not point at loopback, private,
    # link-local or other internal addresses (checked when set and again before each POST): an
    # account holder must not reach the network behind this server. True for closed networks
    # and local development.
    allow_private_targets: bool = False


@dataclass(frozen=True, slots=True)
class InboundSettings:
    """The inbound parse webhook: received mail POSTed to its domain's URL, from the spool."""

    timeout: float = 30.0  # seconds for one POST
    retry_first: float = 60.0  # first retry after a failed POST, doubling...
    retry_max: float = 3600.0  # ...up to this
    max_age: float = 259_200.0  # give up (status `expired`) this long after the mail arrived (3 days)
    max_concurrent: int = 10  # messages posted at once, per delivery process
    # user+tag@domain reaches user@domain when no address matches exactly (Postfix's
    # recipient_delimiter); several characters: each one is a delimiter; "" switches it off.
    recipient_delimiter: str = "+"
