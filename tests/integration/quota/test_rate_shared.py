"""The plans' per-minute rate is one bucket for every process and node of a database: the SMTP
and HTTP API processes of two `mailrelay serve` nodes together accept `rate_per_minute` emails
and refuse the rest (451 4.7.1 over SMTP, 429 over the API); a message whose emails another
node took between its RCPT and its commit is refused whole; while the database is away, each
process's own bucket answers RCPTs. Both databases."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from mailrelay.quota.rate import RateGate, take_shared
from mailrelay.store.db import create_engine
from mailrelay.store.schema import accounts, recipients
from tests.integration.http.conftest import APINode, api_factory
from tests.integration.http.test_mail_send import mail
from tests.integration.quota.conftest import NOON, Clock, data, rcpts, stored_recipients, trusted
from tests.integration.quota.test_ehlo_size import Outage, outage
from tests.integration.serve.test_serve_http import MAIL, _start
from tests.integration.serve.test_serve_process import Server, base_env, free_port, servers, write_config
from tests.integration.smtp.conftest import PASSWORD, Node
from tests.integration.smtp.rawclient import RawClient

__all__ = ["api_factory", "outage", "servers"]  # fixtures

RATE = 6
RATE_TEXT = f"451 4.7.1 Rate limit exceeded: plan free allows {RATE} emails a minute; try again in "


def smtp_session(port: int, rcpts: int, k: int, barrier: threading.Barrier) -> tuple[int, list[str]]:
    """A trusted client: MAIL, then `rcpts` RCPTs at once (after the others are ready), then
    DATA if any was accepted. The emails stored, and every refusal (RCPT or end of DATA)."""
    c = RawClient(port, timeout=30)
    assert c.reply()[0] == 220
    assert c.cmd("EHLO client.test")[0] == 250
    assert c.cmd("MAIL FROM:<app@example.net>")[0] == 250
    barrier.wait()
    c.send(b"".join(b"RCPT TO:<s%d-%d@example.com>\r\n" % (k, i) for i in range(rcpts)))
    replies = [c.reply() for _ in range(rcpts)]
    refusals = [text for code, text in replies if code != 250]
    stored = 0
    if len(refusals) < rcpts:
        assert c.cmd("DATA")[0] == 354
        code, text = c.cmd(b"Subject: rate\r\n\r\nhi\r\n.")
        if code == 250:
            stored = rcpts - len(refusals)
        else:  # another process took the last emails between this RCPT and its commit
            refusals.append(text)
    c.cmd("QUIT")
    c.close()
    return stored, refusals


def in_threads(jobs: list[Callable[[], object]]) -> tuple[list[object], float]:
    """Run every job in a thread of its own; their results, and the seconds the run took."""
    results: list[object] = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = jobs[i]()
        except BaseException as exc:  # reported by the test, not lost in a thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    return results, time.monotonic() - start


def within_rate(accepted: int, seconds: float) -> bool:
    """A bucket of RATE accepts RATE at once, and one more per 60/RATE seconds of the run."""
    return RATE <= accepted <= RATE + int(seconds * RATE / 60)


def another_node_takes(engine: sa.Engine, account: str, n: int, rate: int, now: float) -> None:
    """What another node's committed messages take from the account's shared bucket."""
    with engine.begin() as conn:
        account_id = conn.execute(sa.select(accounts.c.id).where(accounts.c.name == account)).scalar_one()
        gate = RateGate(account_id, rate, n, now, AssertionError)
        take_shared(conn, gate, now)
    assert gate.wait == 0.0


def stored(db_url: str) -> int:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(recipients)).scalar_one())
    finally:
        engine.dispose()


def test_every_process_of_two_nodes_takes_from_one_bucket(tmp_path: Path, db_url: str, servers: list[Server]) -> None:
    # Node a: the SMTP process and two HTTP API processes; node b: SMTP. Each process alone
    # would accept RATE (old per-process buckets: up to 4 x RATE); together they accept RATE.
    smtp_a, smtp_b = free_port(), free_port()
    plan = f"[plans.free]\nrate_per_minute = {RATE}\n"  # and the built-in daily_limit: one round trip for both
    _, url, key, _ = _start(tmp_path, db_url, servers, "processes = 2\n" + plan, smtp_a)  # makes demo
    (tmp_path / "b").mkdir()
    config = write_config(tmp_path / "b", db_url, smtp_b, "[server]\ndemo_account = false\n" + plan)
    servers.append(Server(tmp_path / "b", ["-c", str(config), "serve"], base_env(tmp_path / "b")))
    servers[-1].wait_ready()
    barrier = threading.Barrier(10, timeout=30)

    def api() -> httpx.Response:
        barrier.wait()
        return httpx.post(f"{url}/v3/mail/send", json=MAIL, headers={"Authorization": f"Bearer {key}"},
                          trust_env=False, timeout=30)  # a new connection each: both processes answer

    jobs: list[Callable[[], object]] = [api for _ in range(6)]
    jobs += [lambda k=k: smtp_session((smtp_a, smtp_b)[k % 2], 3, k, barrier) for k in range(4)]
    results, seconds = in_threads(jobs)
    answers: list[httpx.Response] = results[:6]  # type: ignore[assignment]
    sessions: list[tuple[int, list[str]]] = results[6:]  # type: ignore[assignment]
    accepted = sum(r.status_code == 202 for r in answers) + sum(n for n, _ in sessions)
    assert within_rate(accepted, seconds), (accepted, seconds, [r.status_code for r in answers], sessions)
    assert all(text.startswith(RATE_TEXT) for _, refusals in sessions for text in refusals), sessions
    for r in answers:
        assert r.status_code in (202, 429), r.text
        if r.status_code == 429:
            assert r.json()["errors"][0] == {"message": "too many requests", "field": None,
                                             "help": f"plan rate limit: {RATE} emails a minute"}
            assert r.headers["X-RateLimit-Limit"] == str(RATE) and r.headers["X-RateLimit-Remaining"] == "0"
            assert int(r.headers["Retry-After"]) >= 1
    assert stored(db_url) == accepted


@pytest.mark.parametrize("daily_limit", [0, 200])
def test_while_the_database_is_away_the_process_bucket_decides(
        quota_node: Callable[..., tuple[Node, Clock]], outage: Outage, daily_limit: int) -> None:
    node, _ = quota_node(f"[plans.free]\nrate_per_minute = 2\ndaily_limit = {daily_limit}\n" + outage.config)
    c = trusted(node)
    assert [code for code, _ in rcpts(c, ["a@example.com"])] == [250]  # bob looked up
    assert data(c)[0] == 250  # one of two sent
    outage.begin(node)
    replies = rcpts(c, ["b@example.com", "c@example.com"])
    if daily_limit:  # the day's count cannot be taken: 451 4.3.0, as before the shared rate
        assert [r[1][:9] for r in replies] == ["451 4.3.0"] * 2, replies
        return
    assert replies[0][0] == 250 and replies[1][1].startswith("451 4.7.1 Rate limit exceeded"), replies
    code, text = data(c)  # the message itself cannot be stored
    assert code == 451 and text.startswith("451 4.3.0"), text


def test_a_message_whose_emails_another_node_took_meanwhile_gets_451_after_data(
        quota_node: Callable[..., tuple[Node, Clock]]) -> None:
    node, _ = quota_node("[plans.free]\nrate_per_minute = 3\ndaily_limit = 0\n")
    c = trusted(node)
    assert [code for code, _ in rcpts(c, ["a@example.com"])] == [250]  # this process: 1 of 3
    another_node_takes(node.app.engine, "bob", 3, 3, NOON)
    refusal = "451 4.7.1 Rate limit exceeded: plan free allows 3 emails a minute; try again in 20 seconds"
    assert data(c)[1] == refusal
    assert stored_recipients(node) == 0
    # The process's bucket now knows: the next RCPT is answered at once.
    assert rcpts(c, ["b@example.com"])[0][1] == refusal


def test_an_api_request_whose_emails_another_node_took_meanwhile_gets_429(
        api_factory: Callable[..., APINode]) -> None:
    api = api_factory("[plans.slow]\nrate_per_minute = 2\n")
    api.node.app.accounts.create("carol", PASSWORD, plan="slow")
    another_node_takes(api.node.app.engine, "carol", 2, 2, time.time())
    with api.client(api.key("carol")) as http:
        shared = http.post("/v3/mail/send", json=mail())  # this process's bucket is full
        local = http.post("/v3/mail/send", json=mail())
    for r in (shared, local):
        assert r.status_code == 429 and r.headers["X-RateLimit-Limit"] == "2", r.text
        assert 25 <= int(r.headers["Retry-After"]) <= 31  # the next of 2 a minute, in about 30 s
    assert api.node.stored() == []
