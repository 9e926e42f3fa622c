"""Simulated failures for sandbox accounts, so people can test how their app handles them."""

from __future__ import annotations

from typing import Literal

from mailrelay.accounts.service import Account
from mailrelay.core.reply import Reply

Stage = Literal["rcpt", "data"]


def chaos_reply(account: Account, stage: Stage) -> Reply | None:
    """The failure to answer at `stage` for this sandbox account, or None to go on."""
    return None
