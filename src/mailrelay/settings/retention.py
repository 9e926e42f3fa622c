"""`[retention]`: how long finished mail is kept, and how the background sweep deletes it."""

from __future__ import annotations

from dataclasses import dataclass

from mailrelay.settings.convert import ConfigError

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    """Periods in days (fractions allowed: 0.001 is 86.4 s); 0 keeps that kind for ever."""

    enabled: bool = True  # the background sweep of the serve process; `mailrelay retention run` works either way
    bodies_days: float = 7.0  # bodies of finished outbound mail (delivered, bounced, expired, dropped) cleared
    messages_days: float = 30.0  # finished outbound mail deleted with its recipients, attempts and events
    sandbox_days: float = 30.0  # a sandbox account's captured mail deleted
    inbound_days: float = 30.0  # received mail (posted, expired, or kept in the inbox) deleted
    batch: int = 500  # messages per transaction
    interval: float = 300.0  # seconds between sweeps
    pause: float = 0.05  # seconds between two batches of one sweep


def check_retention(src: str, r: RetentionSettings) -> None:
    for key in ("bodies_days", "messages_days", "sandbox_days", "inbound_days"):
        if getattr(r, key) < 0:
            raise ConfigError(src, f"retention.{key}", "expected 0 (keep for ever) or a number of days above 0")
    if r.messages_days and r.bodies_days and r.bodies_days > r.messages_days:
        raise ConfigError(src, "retention.bodies_days",
                          f"expected at most retention.messages_days ({r.messages_days:g})")
    if not 1 <= r.batch <= 10_000:
        raise ConfigError(src, "retention.batch", "expected 1 to 10000 messages per transaction")
    if r.interval <= 0:
        raise ConfigError(src, "retention.interval", "expected a number of seconds above 0")
    if not 0 <= r.pause <= 60:
        raise ConfigError(src, "retention.pause", "expected 0 to 60 seconds")
