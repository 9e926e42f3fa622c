"""What the HTTP handlers are given: the node's services, built once by mailrelay.app."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import sqlalchemy as sa

from mailrelay.accounts.operators import OperatorKeys
from mailrelay.accounts.service import AccountService
from mailrelay.settings import Settings
from mailrelay.smtp.limits import AuthFailureLimiter
from mailrelay.smtp.server import ListenerState
from mailrelay.store.health import StorageHealth
from mailrelay.submission.api import APISubmission


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    accounts: AccountService
    submission: APISubmission
    auth_limiter: AuthFailureLimiter  # failed keys per client address, as failed SMTP logins
    executor: Executor  # argon2 checks, off the event loop
    engine: sa.Engine  # read-only queries (stats, email activity) from sync handlers
    operator_keys: OperatorKeys  # the keys of /admin/v1, in this node's data_dir
    listeners: Callable[[], ListenerState] = ListenerState  # the node's SMTP listeners, for /readyz
    health: StorageHealth | None = None  # the process's database outage bookkeeping (the writer's)
