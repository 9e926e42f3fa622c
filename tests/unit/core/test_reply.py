from __future__ import annotations

from mailrelay.core import reply as R
from mailrelay.core.ids import new_queue_id


def test_single_and_multiline_rendering() -> None:
    assert R.RELAY_DENIED.render() == b"554 5.7.1 Relay access denied\r\n"
    multi = R.Reply(250, "", "mx.example\nPIPELINING\nSIZE 10")
    assert multi.render() == b"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 10\r\n"
    assert R.START_DATA.render().startswith(b"354 End data")


def test_classes() -> None:
    assert R.TOO_MANY_RECIPIENTS.is_temporary and not R.TOO_MANY_RECIPIENTS.is_permanent
    assert R.AUTH_INVALID.is_permanent
    assert (R.MESSAGE_TOO_BIG.code, R.MESSAGE_TOO_BIG.status) == (552, "5.3.4")


def test_queue_ids_are_unique_sortable_and_safe() -> None:
    ids = [new_queue_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 16 and i.isalnum() and i == i.upper() for i in ids)
    assert ids[0][:9] <= ids[-1][:9], "the time prefix never goes backwards"
