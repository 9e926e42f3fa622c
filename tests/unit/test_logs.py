"""The log formats: text as it always was; json one object per line with the call's fields."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailrelay.logs import TEXT_FORMAT, JSONFormatter, setup_logging
from mailrelay.settings import ConfigError, load_settings

Stream = tuple[logging.Logger, io.StringIO, "logging.StreamHandler[io.StringIO]"]


@pytest.fixture
def stream() -> Iterator[Stream]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logger = logging.getLogger("mailrelay.test_logs")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, out, handler
    logger.removeHandler(handler)
    logger.propagate = True


def test_json_has_the_record_and_the_call_fields(stream: Stream) -> None:
    logger, out, handler = stream
    handler.setFormatter(JSONFormatter())
    logger.info("%s: queued from=<%s> nrcpt=%d", "Q1", "a@example.net", 2,
                extra={"queue_id": "Q1", "account": "carol", "event": "queued", "password": "hunter2"})
    line = out.getvalue()
    assert line.count("\n") == 1
    obj = json.loads(line)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", obj["time"])
    assert obj["level"] == "info" and obj["logger"] == "mailrelay.test_logs"
    assert obj["message"] == "Q1: queued from=<a@example.net> nrcpt=2"
    assert isinstance(obj["pid"], int)
    assert (obj["queue_id"], obj["account"], obj["event"]) == ("Q1", "carol", "queued")
    # Only the known fields are copied: an unexpected extra never reaches the output.
    assert "hunter2" not in line and "password" not in obj


def test_json_traceback_is_one_exc_string(stream: Stream) -> None:
    logger, out, handler = stream
    handler.setFormatter(JSONFormatter())
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        logger.exception("delivery failed", extra={"queue_id": "Q2"})
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert obj["level"] == "error" and obj["queue_id"] == "Q2"
    assert obj["exc"].startswith("Traceback") and "ValueError: boom\nsecond line" in obj["exc"]


def test_text_format_is_unchanged_by_the_fields(stream: Stream) -> None:
    logger, out, handler = stream
    handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logger.warning("%s: to=<%s> status=deferred", "Q3", "b@example.com", extra={"queue_id": "Q3", "event": "deferred"})
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING mailrelay.test_logs: "
                        r"Q3: to=<b@example.com> status=deferred\n", out.getvalue())


def test_log_format_setting_file_environment_and_refusal(tmp_path: Path) -> None:
    assert load_settings(None, env={}).server.log_format == "text"
    assert load_settings(None, env={"MAILRELAY_SERVER_LOG_FORMAT": "json"}).server.log_format == "json"
    path = tmp_path / "mailrelay.toml"
    path.write_text('[server]\nlog_format = "xml"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    assert err.value.key == "server.log_format" and str(path) in str(err.value)
    assert '"text", "json"' in err.value.expected


def test_psycopgs_warnings_about_a_clean_up_after_the_error_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    psycopg = logging.getLogger("psycopg")
    before = list(psycopg.filters)
    setup_logging("info")
    try:
        caplog.set_level(logging.WARNING, "psycopg")
        # One per connection in use when the database went away, after the error we log once.
        psycopg.warning("error ignored terminating %r: %s", "<psycopg.Pipeline [BAD]>", "the connection is lost")
        psycopg.warning("error ignored in rollback on %s: %s", "<psycopg.Connection [BAD]>", "connection lost")
        psycopg.warning("unknown PostgreSQL timezone: %r; will use UTC", "Mars/Olympus")
        assert [r.getMessage() for r in caplog.records] == ["unknown PostgreSQL timezone: 'Mars/Olympus'; will use UTC"]
    finally:
        psycopg.filters[:] = before
