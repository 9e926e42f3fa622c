"""Received mail handed to its domain's parse webhook (SendGrid's Inbound Parse): the multipart
form parsed back field by field, raw mode, retries until the receiver is up (posted exactly
once), expiry, and mail kept in the inbox without a webhook. Real sockets, both databases."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path

import pytest
import sqlalchemy as sa

from mailrelay.inbound.dispatch import InboundDispatcher
from mailrelay.inbound.mailbox import Mailbox
from mailrelay.settings import InboundSettings
from mailrelay.spool.writer import SpoolRecord, SpoolWriter
from mailrelay.store.schema import accounts, domains, events, recipients
from tests.support.httpsink import Post, Receiver, http_receiver

PDF = bytes(range(256)) * 40  # every byte value: base64 must round-trip exactly
TRACE = (b"Received: from mx.sender.test (mx.sender.test [203.0.113.5]) by mx.test\r\n"
         b"Authentication-Results: mx.test; spf=pass smtp.mailfrom=sender.test; dkim=pass header.d=sender.test\r\n")
AUTH = {"spf": {"result": "pass", "domain": "sender.test"},
        "dkim": [{"result": "pass", "domain": "sender.test", "selector": "s1"},
                 {"result": "fail", "domain": "esp.test", "selector": "x"}],
        "sender_ip": "203.0.113.5",
        "authentication_results": "mx.test; spf=pass smtp.mailfrom=sender.test; dkim=pass header.d=sender.test"}


# --- a loopback webhook receiver ---------------------------------------------------------------


def form_of(post: Post) -> dict[str, tuple[bytes, str | None, str]]:
    """name -> (value bytes, filename, content type), parsed with the stdlib."""
    ctype = post.headers["content-type"].encode()
    msg = BytesParser(policy=default_policy).parsebytes(b"Content-Type: " + ctype + b"\r\n\r\n" + post.body)
    assert msg.get_content_type() == "multipart/form-data" and not msg.defects, msg.defects
    out: dict[str, tuple[bytes, str | None, str]] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        assert isinstance(name, str) and name not in out
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        out[name] = (payload, part.get_filename(), part.get_content_type())
    return out


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with http_receiver("/parse?key=sekrit", fail_status=503) as rcv:
        yield rcv


# --- helpers -----------------------------------------------------------------------------------


def add_domain(engine: sa.Engine, account: str, name: str, *, webhook: str | None = None, raw: bool = False,
               ) -> int:
    now = time.time()
    with engine.begin() as conn:
        account_id = conn.execute(sa.select(accounts.c.id).where(accounts.c.name == account)).scalar()
        if account_id is None:
            account_id = conn.execute(accounts.insert().values(
                name=account, password_hash="$argon2id$x", created_at=now, updated_at=now)
                .returning(accounts.c.id)).scalar_one()
        conn.execute(domains.insert().values(account_id=account_id, name=name, selector="s1", created_at=now,
                                             inbound=True, inbound_webhook=webhook, inbound_raw=raw))
    return int(account_id)


def sample_message() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Zoë Sender <zoe@sender.test>"
    msg["To"] = "Ann <ann@in.test>, bob@in.test"
    msg["Cc"] = "carol@keep.test"
    msg["Subject"] = "Quarterly report — draft"
    msg["Message-ID"] = "<r1@sender.test>"
    msg.set_content("Héllo Ann,\nthe report is attached.\n")
    msg.add_alternative("<p>H&eacute;llo <b>Ann</b></p>", subtype="html")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="report.pdf", cid="<rep1@sender.test>")
    return msg.as_bytes(policy=default_policy.clone(linesep="\r\n"))


def store(engine: sa.Engine, account_id: int, qid: str, rcpts: list[str], body: bytes, *,
          created_at: float | None = None, status: str = "inbound", direction: str = "in") -> None:
    record = SpoolRecord(
        queue_id=qid, account_id=account_id, mail_from="bounces@sender.test", mail_params={},
        recipients=[(r, {}) for r in rcpts], client_ip="198.51.100.9", helo="mx.sender.test", auth_user=None,
        tls_version=None, tls_cipher=None, listener="smtp", trace_headers=TRACE, body=body,
        created_at=time.time() if created_at is None else created_at, direction=direction, auth=AUTH,
        initial_status=status, processed_event=False, count_usage=0, subject="Quarterly report — draft",
        message_id_header="<r1@sender.test>")

    async def go() -> None:
        writer = SpoolWriter(engine)
        writer.start(asyncio.get_running_loop())
        await writer.submit(record, None)
        writer.stop()

    asyncio.run(go())


def statuses(engine: sa.Engine, qid: str) -> dict[str, str]:
    with engine.connect() as conn:
        return {r.address: r.status for r in conn.execute(
            sa.select(recipients.c.address, recipients.c.status).where(recipients.c.message_id == qid))}


def event_types(engine: sa.Engine, qid: str) -> list[tuple[str | None, str]]:
    with engine.connect() as conn:
        return [(r.recipient, r.type) for r in conn.execute(
            sa.select(events.c.recipient, events.c.type).where(events.c.message_id == qid).order_by(events.c.id))]


def run_dispatcher(engine: sa.Engine, settings: InboundSettings, until: Callable[[], bool], *,
                   timeout: float = 15.0, linger: float = 0.0) -> InboundDispatcher:
    """Run a dispatcher (with its own spool writer) until `until()` holds, then `linger` more."""
    async def go() -> InboundDispatcher:
        writer = SpoolWriter(engine)
        writer.start(asyncio.get_running_loop())
        dispatcher = InboundDispatcher(settings, writer, node="test-node", allow_private=True)
        await dispatcher.start()
        try:
            deadline = time.monotonic() + timeout
            while not await asyncio.to_thread(until):
                assert time.monotonic() < deadline, "timed out"
                await asyncio.sleep(0.05)
            await asyncio.sleep(linger)
        finally:
            await dispatcher.stop(5.0)
            await asyncio.to_thread(writer.stop)
        return dispatcher

    return asyncio.run(go())


FAST = InboundSettings(timeout=5.0, retry_first=0.2, retry_max=0.4, max_age=120.0, max_concurrent=4)


# --- tests -------------------------------------------------------------------------------------


def test_webhook_gets_one_multipart_post_with_every_field(engine: sa.Engine, receiver: Receiver) -> None:
    acct = add_domain(engine, "alice", "in.test", webhook=receiver.url)
    add_domain(engine, "alice", "keep.test")  # inbound, no webhook: kept
    body = sample_message()
    store(engine, acct, "q1", ["ann@in.test", "bob@in.test", "carol@keep.test"], body)
    run_dispatcher(engine, FAST, lambda: statuses(engine, "q1")["ann@in.test"] != "inbound", linger=0.6)

    assert statuses(engine, "q1") == {"ann@in.test": "posted", "bob@in.test": "posted", "carol@keep.test": "kept"}
    [post] = receiver.posts
    assert post.status == 200 and post.headers["user-agent"].startswith("mailrelay/")
    assert post.headers["content-type"].startswith("multipart/form-data; boundary=")
    form = form_of(post)
    text = {k: v[0].decode() for k, v in form.items() if v[1] is None}
    assert text["headers"].startswith(TRACE.decode()) and "Subject: Quarterly report" in text["headers"]
    assert "\r\n\r\n" not in text["headers"] and "Héllo" not in text["headers"]
    assert text["dkim"] == "{@sender.test : pass, @esp.test : fail}"
    assert text["SPF"] == "pass"
    assert text["to"] == "Ann <ann@in.test>, bob@in.test"
    assert text["from"] == "Zoë Sender <zoe@sender.test>"
    assert text["cc"] == "carol@keep.test"
    assert text["subject"] == "Quarterly report — draft"
    # Decoded (quoted-printable, UTF-8), line ends as in the message.
    assert text["text"] == "Héllo Ann,\r\nthe report is attached.\r\n"
    assert text["html"] == "<p>H&eacute;llo <b>Ann</b></p>\r\n"
    assert text["sender_ip"] == "203.0.113.5"
    assert json.loads(text["envelope"]) == {"to": ["ann@in.test", "bob@in.test"], "from": "bounces@sender.test"}
    assert json.loads(text["charsets"]) == {k: "UTF-8" for k in ("to", "from", "cc", "subject", "text", "html")}
    assert text["attachments"] == "1"
    assert json.loads(text["attachment-info"]) == {"attachment1": {
        "filename": "report.pdf", "name": "report.pdf", "type": "application/pdf", "content-id": "rep1@sender.test"}}
    assert form["attachment1"] == (PDF, "report.pdf", "application/pdf")
    assert "email" not in form
    assert set(form) == {"headers", "dkim", "SPF", "to", "from", "cc", "subject", "text", "html", "sender_ip",
                         "envelope", "charsets", "attachments", "attachment-info", "attachment1"}
    assert event_types(engine, "q1") == [("carol@keep.test", "inbound-kept"), ("ann@in.test", "inbound-posted"),
                                         ("bob@in.test", "inbound-posted")]


def test_raw_mode_posts_the_message_as_stored(engine: sa.Engine, receiver: Receiver) -> None:
    acct = add_domain(engine, "alice", "in.test", webhook=receiver.url, raw=True)
    body = sample_message().replace(b"draft", b"draft \xff 8bit")  # not even valid UTF-8: still byte-exact
    store(engine, acct, "q2", ["ann@in.test"], body)
    run_dispatcher(engine, FAST, lambda: statuses(engine, "q2")["ann@in.test"] == "posted")
    [post] = receiver.accepted()
    form = form_of(post)
    assert form["email"][0] == TRACE + body
    assert form["SPF"][0] == b"pass" and form["dkim"][0] == b"{@sender.test : pass, @esp.test : fail}"
    assert form["to"][0].decode() == "Ann <ann@in.test>, bob@in.test"
    assert form["from"][0].decode() == "Zoë Sender <zoe@sender.test>"
    assert form["sender_ip"][0] == b"203.0.113.5"
    assert json.loads(form["envelope"][0]) == {"to": ["ann@in.test"], "from": "bounces@sender.test"}
    assert json.loads(form["charsets"][0]) == {"to": "UTF-8", "from": "UTF-8", "subject": "UTF-8"}
    assert not {"headers", "text", "html", "attachments", "attachment1"} & set(form)


def test_webhook_down_then_up_gets_the_message_exactly_once(engine: sa.Engine, receiver: Receiver) -> None:
    acct = add_domain(engine, "alice", "in.test", webhook=receiver.url)
    receiver.fail_first = 3
    store(engine, acct, "q3", ["ann@in.test", "bob@in.test"], sample_message())
    run_dispatcher(engine, FAST, lambda: set(statuses(engine, "q3").values()) == {"posted"}, linger=1.5)
    assert [p.status for p in receiver.posts] == [503, 503, 503, 200], "one POST per try, then none"
    assert len(receiver.accepted()) == 1
    types = event_types(engine, "q3")
    assert [t for r, t in types if r == "ann@in.test"] == ["inbound-deferred"] * 3 + ["inbound-posted"]
    with engine.connect() as conn:
        rows = conn.execute(sa.select(recipients.c.attempts, recipients.c.last_reply, recipients.c.lease_owner,
                                      recipients.c.next_attempt_at).where(recipients.c.message_id == "q3")).all()
        replies = [r.reply for r in conn.execute(sa.select(events.c.reply).where(
            events.c.message_id == "q3", events.c.recipient == "bob@in.test").order_by(events.c.id))]
    assert all((r.attempts, r.last_reply, r.lease_owner, r.next_attempt_at) == (4, "HTTP 200", None, None)
               for r in rows)
    assert replies == ["HTTP 503"] * 3 + ["HTTP 200"]


def test_unreachable_webhook_expires_with_an_event(engine: sa.Engine, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a port with nobody listening: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    acct = add_domain(engine, "alice", "in.test", webhook=f"http://127.0.0.1:{port}/parse?key=sekrit")
    store(engine, acct, "q4", ["ann@in.test"], sample_message())
    settings = InboundSettings(timeout=2.0, retry_first=0.2, retry_max=0.2, max_age=1.0, max_concurrent=2)
    caplog.set_level("INFO", logger="mailrelay.inbound")
    run_dispatcher(engine, settings, lambda: statuses(engine, "q4")["ann@in.test"] == "expired")
    types = [t for _, t in event_types(engine, "q4")]
    assert types[-1] == "inbound-expired" and set(types[:-1]) == {"inbound-deferred"} and len(types) >= 2
    with engine.connect() as conn:
        row = conn.execute(sa.select(recipients.c.last_reply, recipients.c.next_attempt_at)
                           .where(recipients.c.message_id == "q4")).one()
    assert row == ("connection refused", None)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "q4" in warnings[0] and "given up" in warnings[0]
    assert "sekrit" not in caplog.text, "no query string (token) in the log"


def test_no_webhook_keeps_mail_in_the_accounts_inbox(engine: sa.Engine, db_url: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from mailrelay.cli.main import main

    acct = add_domain(engine, "alice", "keep.test")
    add_domain(engine, "bob", "other.test")
    body = sample_message()
    store(engine, acct, "q5", ["carol@keep.test"], body, status="kept")
    config = tmp_path / "mailrelay.toml"
    config.write_text(f'[server]\ndata_dir = "data"\n[storage]\nurl = "{db_url}"\n')

    def cli(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["-c", str(config), "inbox", *args])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = cli("list", "--account", "alice")
    assert code == 0 and "q5" in out and "Quarterly report" in out
    assert out.splitlines()[0].split()[:3] == ["ID", "KIND", "ACCOUNT"] and out.splitlines()[1].split()[1] == "in"
    assert "q5" not in cli("list", "--account", "bob")[1]
    [entry] = json.loads(cli("list", "--json")[1])
    assert entry["kind"] == "in" and entry["recipients"] == ["carol@keep.test"]
    assert cli("show", "q5", "--account", "bob")[0] == 2
    code, out, _ = cli("show", "q5", "--account", "alice")
    assert code == 0 and "in (received mail)" in out and AUTH["authentication_results"] in out
    assert "report.pdf" in out
    assert Mailbox(engine).get("q5", account="alice").raw == TRACE + body
    code, _, err = cli("release", "q5", "--account", "alice")
    assert code == 2 and "received mail, not a sandbox capture" in err and len(err.strip().splitlines()) == 1
    assert cli("clear", "--account", "bob", "--yes")[1] == "deleted 0 inbox messages of account bob\n"
    assert statuses(engine, "q5") == {"carol@keep.test": "kept"}


def test_one_inbox_lists_sandbox_captures_and_received_mail_newest_first(
        engine: sa.Engine, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mailrelay.cli.main import main

    acct = add_domain(engine, "alice", "keep.test")
    now = time.time()
    store(engine, acct, "s1", ["x@out.test"], sample_message(), status="captured", direction="out", created_at=now - 30)
    store(engine, acct, "r1", ["carol@keep.test"], sample_message(), status="kept", created_at=now - 20)
    store(engine, acct, "s2", ["y@out.test"], sample_message(), status="captured", direction="out", created_at=now - 10)
    config = tmp_path / "mailrelay.toml"
    config.write_text(f'[server]\ndata_dir = "data"\n[storage]\nurl = "{db_url}"\n')

    def cli(*args: str) -> str:
        capsys.readouterr()
        assert main(["-c", str(config), "inbox", *args]) == 0
        return capsys.readouterr().out

    entries = json.loads(cli("list", "--json"))
    assert [(e["id"], e["kind"]) for e in entries] == [("s2", "sandbox"), ("r1", "in"), ("s1", "sandbox")]
    assert [e["id"] for e in json.loads(cli("list", "--json", "--limit", "2"))] == ["s2", "r1"]
    assert [e["id"] for e in json.loads(cli("list", "--json", "--search", "quarterly", "--limit", "2"))] == [
        "s2", "r1"]
    assert "sandbox (captured, not sent)" in cli("show", "s1") and "in (received mail)" in cli("show", "r1")
    assert cli("clear", "--yes") == "deleted 3 inbox messages of every account\n"
    assert json.loads(cli("list", "--json")) == []


def test_a_text_part_that_decodes_to_lone_surrogates_is_posted_not_retried_forever(
        engine: sa.Engine, receiver: Receiver) -> None:
    # UTF-7 (and UTF-16) parts can decode to lone surrogates, which UTF-8 cannot encode: the
    # form encoder raised past the settling, so the message was claimed again forever.
    acct = add_domain(engine, "alice", "in.test", webhook=receiver.url)
    body = (b"From: zoe@sender.test\r\nTo: ann@in.test\r\nSubject: hi\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=utf-7\r\n\r\nhi +2AA- there\r\n")
    store(engine, acct, "q6", ["ann@in.test"], body)
    run_dispatcher(engine, FAST, lambda: statuses(engine, "q6")["ann@in.test"] != "inbound", timeout=8.0)
    assert statuses(engine, "q6") == {"ann@in.test": "posted"}
    [post] = receiver.accepted()
    assert form_of(post)["text"][0] == b"hi ? there\r\n"


def test_a_webhook_answering_byte_by_byte_is_cut_off_at_the_timeout(engine: sa.Engine) -> None:
    # httpx bounds each read, not the whole POST: a receiver dribbling its answer kept a POST
    # going past its lease (then claimed and posted again). The whole POST is bounded now.
    listener = socket.create_server(("127.0.0.1", 0))
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                for i in range(len(answer)):
                    conn.sendall(answer[i:i + 1])
                    time.sleep(0.2)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    acct = add_domain(engine, "alice", "in.test",
                      webhook=f"http://127.0.0.1:{listener.getsockname()[1]}/parse")
    store(engine, acct, "q7", ["ann@in.test"], sample_message())
    settings = InboundSettings(timeout=1.0, retry_first=60.0, retry_max=60.0, max_age=600.0, max_concurrent=2)
    started = time.monotonic()
    try:
        run_dispatcher(engine, settings, lambda: bool(event_types(engine, "q7")), timeout=20.0)
    finally:
        listener.close()
    assert time.monotonic() - started < 6.0
    with engine.connect() as conn:
        row = conn.execute(sa.select(recipients.c.status, recipients.c.last_reply)
                           .where(recipients.c.message_id == "q7")).one()
    assert tuple(row) == ("inbound", "timed out after 1s")
    assert [t for _, t in event_types(engine, "q7")] == ["inbound-deferred"]


def test_inbox_clear_deletes_received_mail_but_not_mail_waiting_for_its_webhook(engine: sa.Engine) -> None:
    """Kept, posted and expired received mail is in the inbox and `inbox clear` deletes it;
    mail still to be posted is left (the dispatcher holds it), as is another account's."""
    alice = add_domain(engine, "alice", "keep.test")
    bob = add_domain(engine, "bob", "other.test")
    for qid, status in (("k1", "kept"), ("p1", "posted"), ("e1", "expired"), ("i1", "inbound")):
        store(engine, alice, qid, ["carol@keep.test"], sample_message(), status=status)
    store(engine, bob, "b1", ["dan@other.test"], sample_message(), status="kept")
    mailbox = Mailbox(engine)
    assert mailbox.clear(account="alice", now=time.time(), dry_run=True) == 3
    assert mailbox.count(account="alice") == 4, "a dry run deletes nothing"
    assert mailbox.clear(account="alice", now=time.time()) == 3
    assert [e.id for e in mailbox.list(account="alice")] == ["i1"]
    assert statuses(engine, "k1") == {} and statuses(engine, "i1") == {"carol@keep.test": "inbound"}
    assert [t for _, t in event_types(engine, "k1")][-1] == "deleted-by-operator"
    assert [e.id for e in mailbox.list(account="bob")] == ["b1"]
    assert mailbox.clear(now=time.time()) == 1 and mailbox.count() == 1


def test_a_message_the_email_package_cannot_parse_is_posted_raw(engine: sa.Engine, receiver: Receiver,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    # `To: "` makes the email package's address parser raise (IndexError): such a message was
    # retried, then expired. It is posted once in SendGrid's raw shape: the whole message in
    # `email`, with the envelope and the checks' results.
    acct = add_domain(engine, "alice", "in.test", webhook=receiver.url)  # a parsed-mode domain
    body = (b'From: Zo\xc3\xab <zoe@sender.test>\r\nTo: "\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n'
            b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nhello\r\n")
    store(engine, acct, "q8", ["ann@in.test"], body)
    caplog.set_level("INFO", logger="mailrelay.inbound")
    run_dispatcher(engine, FAST, lambda: statuses(engine, "q8")["ann@in.test"] != "inbound", timeout=8.0)
    assert statuses(engine, "q8") == {"ann@in.test": "posted"}
    [post] = receiver.posts
    form = form_of(post)
    assert form["email"][0] == TRACE + body
    assert json.loads(form["envelope"][0]) == {"to": ["ann@in.test"], "from": "bounces@sender.test"}
    assert form["SPF"][0] == b"pass" and form["dkim"][0] == b"{@sender.test : pass, @esp.test : fail}"
    assert form["sender_ip"][0] == b"203.0.113.5"
    assert (form["to"][0], form["from"][0].decode(), form["subject"][0].decode()) == (
        b'"', "Zoë <zoe@sender.test>", "café")
    assert not {"headers", "text", "html", "attachments"} & set(form)
    assert [t for _, t in event_types(engine, "q8")] == ["inbound-posted"]
    assert any("q8" in r.getMessage() and "posted raw" in r.getMessage() for r in caplog.records)
