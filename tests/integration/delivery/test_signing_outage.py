"""DKIM signing while the database is away: what was read last goes on being used (mail signed
as a moment ago, not deferred with a traceback, not sent unsigned); an account never read
raises the outage, for its delivery to be deferred."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pytest
import sqlalchemy as sa

from mailrelay.accounts.domains import DomainService
from mailrelay.delivery.signing import DomainSigner
from mailrelay.store.db import create_engine
from mailrelay.store.health import is_unavailable
from mailrelay.store.schema import accounts
from tests.support.tcpproxy import TCPProxy

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)

MSG = b"From: app@sender.test\r\nSubject: hi\r\n\r\nbody\r\n"


def test_mail_is_signed_as_last_read_while_the_database_is_away(engine: sa.Engine, db_url: str) -> None:
    with engine.begin() as conn:
        alice = conn.execute(accounts.insert().values(name="alice", password_hash="$argon2id$x", created_at=1.0,
                                                      updated_at=1.0).returning(accounts.c.id)).scalar_one()
    DomainService(engine).add("sender.test", "alice")
    DomainService(engine).mark_verified("sender.test")
    parts = urlsplit(db_url)
    proxy = TCPProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    through = create_engine(urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}")))
    try:
        signer = DomainSigner(DomainService(through), cache_seconds=0.0)  # every message reads again
        assert signer(alice, MSG).startswith(b"DKIM-Signature: ")
        proxy.cut()
        signed = signer(alice, MSG)
        assert signed.startswith(b"DKIM-Signature: ") and b"d=sender.test" in signed
        with pytest.raises(sa.exc.DBAPIError) as info:
            signer(alice + 1, MSG)  # never read: nothing to go on with
        assert is_unavailable(info.value)
    finally:
        through.dispose()
        proxy.close()
