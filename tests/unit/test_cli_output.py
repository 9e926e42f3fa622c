"""The CLI's table, age, size and time formatting."""

from __future__ import annotations

import pytest

from mailrelay.cli.output import format_size, format_table, format_time, printable
from mailrelay.core.dates import format_age


def test_table_columns_are_aligned_with_uppercase_headers() -> None:
    out = format_table(("name", "keys"), [("alice", 1), ("bob-the-builder", 12)], align="<>")
    assert out.splitlines() == [
        "NAME             KEYS",
        "alice               1",
        "bob-the-builder    12",
    ]


def test_table_has_no_trailing_spaces_and_shows_none_as_dash() -> None:
    out = format_table(("a", "b"), [("x", None), ("longer", "")])
    lines = out.splitlines()
    assert lines[1] == "x       -"
    assert all(line == line.rstrip() for line in lines)


def test_table_cells_stay_on_one_line_and_escape_terminal_controls() -> None:
    out = format_table(("label",), [("two\nlines\x1b[31m",)])
    assert out.splitlines() == ["LABEL", "two lines\\x1b[31m"]


def test_table_with_no_rows_is_the_header_line() -> None:
    assert format_table(("id", "status"), []) == "ID  STATUS"


def test_printable_keeps_tabs_newlines_and_unicode() -> None:
    assert printable("a\tb\nc é ✓") == "a\tb\nc é ✓"
    assert printable("\x00\r\x7f\x9b") == "\\x00\\x0d\\x7f\\x9b"


@pytest.mark.parametrize(("seconds", "text"), [
    (-5, "0s"), (0, "0s"), (59.9, "59s"), (60, "1m"), (190, "3m"), (3599, "59m"),
    (3600, "1h"), (7300, "2h"), (86399, "23h"), (86400, "1d"), (200_000, "2d"),
])
def test_format_age(seconds: float, text: str) -> None:
    assert format_age(seconds) == text


@pytest.mark.parametrize(("n", "text"), [
    (0, "0"), (512, "512"), (1023, "1023"), (1024, "1.0K"), (1536, "1.5K"),
    (3 * 1024 * 1024, "3.0M"), (5 * 1024**3, "5.0G"), (3 * 1024**4, "3072.0G"),
])
def test_format_size(n: int, text: str) -> None:
    assert format_size(n) == text


def test_format_time_is_utc_minutes() -> None:
    assert format_time(0) == "1970-01-01 00:00"
    assert format_time(1_700_000_000.9) == "2023-11-14 22:13"
    assert format_time(None) == "-"
