"""The spool writer's rate gates: a message whose emails do not fit its account's shared bucket
is left out of its group commit, and nothing else of the batch is. Both databases."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from mailrelay.quota.rate import RateGate, to_ns
from mailrelay.spool.writer import SpoolRecord, SpoolWriter
from mailrelay.store.schema import accounts, messages, recipients

NOW = 1_790_000_000.0


class Refused(Exception):
    pass


def _account(engine: sa.Engine, name: str) -> int:
    with engine.begin() as conn:
        return int(conn.execute(accounts.insert().values(name=name, password_hash="x", created_at=0,
                                                         updated_at=0).returning(accounts.c.id)).scalar_one())


def _record(queue_id: str, account_id: int, rcpts: int, gate: RateGate | None = None) -> SpoolRecord:
    return SpoolRecord(queue_id=queue_id, account_id=account_id, mail_from="app@example.net", mail_params={},
                       recipients=[(f"r{i}@example.com", {}) for i in range(rcpts)], client_ip="127.0.0.1",
                       helo="client.test", auth_user=None, tls_version=None, tls_cipher=None, listener="smtp",
                       trace_headers=b"", body=b"Subject: hi\r\n\r\nhi\r\n", created_at=NOW, rate_gate=gate)


def test_a_message_past_its_rate_is_left_out_of_the_batch_alone(engine: sa.Engine) -> None:
    a, b = _account(engine, "a"), _account(engine, "b")
    first, second = (RateGate(a, 2, n, NOW, lambda wait: Refused(wait)) for n in (2, 1))

    async def run() -> list[object]:
        writer = SpoolWriter(engine, inline=True)  # what one loop iteration submits is one batch
        writer.start(asyncio.get_running_loop())
        futures = [writer.submit(_record("Q1", a, 2, first), "ok1"),
                   writer.submit(_record("Q2", a, 1, second), "ok2"),  # a's bucket of 2 is spent
                   writer.submit(_record("Q3", b, 1), "ok3"),
                   writer.run(lambda conn: "op")]
        out = await asyncio.gather(*futures, return_exceptions=True)
        assert writer.batches == 1 and writer.written == 2
        return out

    out = asyncio.run(run())
    assert out[0] == "ok1" and out[2] == "ok3" and out[3] == "op", out
    assert isinstance(out[1], Refused) and out[1].args == (30.0,)  # the next of 2 a minute
    assert (first.wait, first.full_at) == (0.0, to_ns(NOW + 60)) and second.full_at == to_ns(NOW + 60)
    with engine.connect() as conn:
        assert sorted(conn.execute(sa.select(messages.c.id)).scalars()) == ["Q1", "Q3"]
        assert conn.execute(sa.select(sa.func.count()).select_from(recipients)).scalar_one() == 3


def test_one_statement_takes_an_accounts_batch_as_one_after_the_other_would(engine: sa.Engine) -> None:
    # Three messages of one account in one batch, let through since different times: together
    # they end the bucket where three takes in a row would, and a fourth that does not fit
    # sends the batch one by one, leaving out only that one.
    a = _account(engine, "a")
    since = (NOW - 30, NOW - 60, NOW)
    gates = [RateGate(a, 6, n, s, lambda wait: Refused(wait)) for n, s in zip((2, 3, 1), since, strict=True)]

    async def run(gates: list[RateGate], first: int) -> list[object]:
        writer = SpoolWriter(engine, inline=True)
        writer.start(asyncio.get_running_loop())
        futures = [writer.submit(_record(f"Q{first + k}", a, g.n, g), "ok") for k, g in enumerate(gates)]
        return await asyncio.gather(*futures, return_exceptions=True)

    assert asyncio.run(run(gates, 1)) == ["ok"] * 3
    # One after the other: max(-, NOW-30) + 2T, then max(that, NOW-60) + 3T, then + 1T (T = 10 s).
    assert {g.full_at for g in gates} == {to_ns(NOW - 30 + 60)}
    more = [RateGate(a, 6, n, NOW, lambda wait: Refused(wait)) for n in (2, 3)]
    out = asyncio.run(run(more, 4))
    assert out[0] == "ok" and isinstance(out[1], Refused) and out[1].args == (20.0,), out  # 80 s > 60
    with engine.connect() as conn:
        assert sorted(conn.execute(sa.select(messages.c.id)).scalars()) == ["Q1", "Q2", "Q3", "Q4"]
