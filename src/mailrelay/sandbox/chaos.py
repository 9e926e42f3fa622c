"""Simulated failures for sandbox accounts, so people can test how their app handles them.

`accounts.chaos` holds JSON such as `{"rcpt": {"fraction": 0.2, "code": 451}, "data": {...}}`:
that fraction of RCPT commands (or of messages at the end of DATA) is answered with `code`.
Written by `mailrelay account sandbox NAME on --chaos-rcpt 0.2:451`, read at every RCPT/DATA.
"""

from __future__ import annotations

import functools
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from mailrelay.accounts.service import Account
from mailrelay.core.reply import Reply

log = logging.getLogger("mailrelay.sandbox")

Stage = Literal["rcpt", "data"]
STAGES: tuple[Stage, ...] = ("rcpt", "data")
DEFAULT_CODE = 451  # temporary: the failure a well-behaved client must retry


class ChaosError(ValueError):
    """A chaos setting that cannot be used; the message names what is wrong."""


@dataclass(frozen=True, slots=True)
class Failure:
    fraction: float  # 0..1: share of commands answered with `code`
    code: int


def validate_code(code: int) -> int:
    # 421 is excluded: RFC 5321 §3.8 makes it close the connection, which is a different test.
    if not (400 <= code <= 599) or code == 421:
        raise ChaosError(f"code {code} is not a 4xx or 5xx reply code (421 is not allowed: it closes the connection)")
    return code


def validate_fraction(fraction: float) -> float:
    if not 0.0 <= fraction <= 1.0:  # also refuses NaN
        raise ChaosError(f"fraction {fraction:g} is not between 0 and 1")
    return fraction


def parse_spec(text: str) -> Failure:
    """`FRACTION[:CODE]` as typed on the command line, e.g. "0.2:451" or "1"."""
    fraction_text, _, code_text = text.strip().partition(":")
    try:
        fraction = float(fraction_text)
    except ValueError:
        raise ChaosError(f"{text!r} is not FRACTION[:CODE], e.g. 0.2:451") from None
    try:
        code = int(code_text) if code_text else DEFAULT_CODE
    except ValueError:
        raise ChaosError(f"{text!r}: code {code_text!r} is not a number, e.g. 0.2:451") from None
    return Failure(validate_fraction(fraction), validate_code(code))


def to_json(failures: dict[Stage, Failure]) -> str | None:
    """The `accounts.chaos` value for these failures; None when there are none."""
    if not failures:
        return None
    return json.dumps({stage: {"fraction": f.fraction, "code": f.code} for stage, f in failures.items()})


def describe(chaos: str | None) -> str:
    """One line for people: "RCPT 20% 451, DATA 5% 554", or "none"."""
    failures = parse(chaos) if chaos else {}
    return ", ".join(f"{stage.upper()} {f.fraction:.0%} {f.code}" for stage, f in failures.items()) or "none"


@functools.lru_cache(maxsize=256)
def parse(text: str) -> dict[Stage, Failure]:
    """Stored JSON → failures by stage. Cached per string (the Account carries the string), so
    a bad value is warned about once and costs nothing afterwards; it means no chaos."""
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict) or set(raw) - set(STAGES):
            raise ChaosError(f"expected an object with keys {', '.join(STAGES)}")
        out: dict[Stage, Failure] = {}
        for stage in STAGES:
            entry = raw.get(stage)
            if entry is None:
                continue
            if not isinstance(entry, dict) or isinstance(entry.get("code"), bool):
                raise ChaosError(f"{stage}: expected {{\"fraction\": F, \"code\": C}}")
            out[stage] = Failure(validate_fraction(float(entry["fraction"])), validate_code(int(entry["code"])))
        return out
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("ignoring the invalid sandbox chaos setting %.200r: %s", text, exc)
        return {}


def chaos_reply(account: Account, stage: Stage, *, rand: Callable[[], float] = random.random) -> Reply | None:
    """The failure to answer at `stage` for this sandbox account, or None to go on."""
    if not account.sandbox or not account.chaos:
        return None
    failure = parse(account.chaos).get(stage)
    if failure is None or failure.fraction <= 0.0 or rand() >= failure.fraction:
        return None
    # RFC 3463 §3.1: X.0.0, "other or undefined status" of the reply's class.
    return Reply(failure.code, f"{failure.code // 100}.0.0",
                 f"sandbox chaos: simulated failure (account {account.name})")
