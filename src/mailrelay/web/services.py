"""What the dashboard's pages are given: the node's services, built once by mailrelay.app."""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass

import sqlalchemy as sa

from mailrelay.accounts.service import AccountService
from mailrelay.accounts.websessions import WebSessions
from mailrelay.settings import Settings
from mailrelay.smtp.limits import AuthFailureLimiter


@dataclass(frozen=True, slots=True)
class WebServices:
    settings: Settings
    accounts: AccountService
    sessions: WebSessions
    lockout: AuthFailureLimiter  # failed sign-ins count with failed SMTP logins and API keys
    engine: sa.Engine
    executor: Executor  # argon2 and database reads, off the event loop
    secure_cookies: bool  # served over TLS: cookies get Secure
