"""/metrics reads every process's counter file; a file a process has just created (0 bytes,
not yet sized) must not fail the scrape, as it does with prometheus-client's own collector."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

from mailrelay.http.metrics import _Files


def _counter_file(path: Path, value: float) -> None:
    d = MmapedDict(str(path))  # type: ignore[no-untyped-call]
    key = mmap_key("mailrelay_messages_accepted", "mailrelay_messages_accepted_total",
                   ["listener", "plan"], ["smtp", "free"], "accepted")
    d.write_value(key, value, 0.0)  # type: ignore[no-untyped-call]
    d.close()  # type: ignore[no-untyped-call]


def _accepted(families: object) -> float:
    return sum(s.value for f in families for s in f.samples  # type: ignore[attr-defined]
               if s.name == "mailrelay_messages_accepted_total")


def test_a_file_just_created_is_read_as_empty_not_as_a_failed_scrape(tmp_path: Path) -> None:
    _counter_file(tmp_path / "counter_100.db", 3)
    _counter_file(tmp_path / "counter_101.db", 4)
    (tmp_path / "counter_102.db").write_bytes(b"")  # a worker between creating and sizing its file
    with pytest.raises(struct.error):  # what the library's collector does with it
        list(MultiProcessCollector.merge([str(p) for p in tmp_path.iterdir()]))  # type: ignore[no-untyped-call]
    assert _accepted(_Files(str(tmp_path)).collect()) == 7
