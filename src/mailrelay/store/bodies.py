"""Message content on disk: trace headers and body in `message_bodies`, the body zstd-compressed.

A message's content is the trace headers we add (a prefix) and its body exactly as received.
Since migration 0016 both go into a row of `message_bodies` of their own, the body as one zstd
frame (RFC 8878; level 3). Measured with bench/storage.py on realistic mail (bench/README.md):

- Compressed, a 2 KB message's body row takes about 1.4 KB (nearly three to a 4 KiB page),
  where the uncompressed 2.4 KB row took a page of its own (two do not fit): the database held
  4.9 KB per 2 KB message, now 2.4 KB. Compressing costs ~12 µs for 2 KB (zlib: ~60) and
  ~35 µs for 10 KB (zlib: ~200) of CPU, in the spool writer's thread before it takes the write
  lock; zstd lets go of the GIL meanwhile, so the event loop keeps answering.
- In a table of its own, clearing a body (retention) deletes a row, and SQLite frees the pages
  left empty; emptying a column of `messages` shrank each row in place and freed no page.
- A larger SQLite page would pack uncompressed rows better, but each commit writes every page
  it touches to the WAL whole: 8 KiB pages wrote ~1.6x the bytes per commit.

Messages written before 0016 keep their content uncompressed in `messages.trace_headers` and
`messages.body` and have no body row; new ones leave those two empty. `Content.of` reads both
kinds, so an upgraded database serves its old mail as it was; retention clears both.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mailrelay.store.schema import message_bodies, messages

if sys.version_info >= (3, 14):
    from compression import zstd
else:  # the same module, packaged for older Pythons (PEP 784)
    from backports import zstd

LEVEL: Final = 3  # zstd's default: level 1 saved 13-22 % of the CPU and stored 2-4 % more
_MAGIC: Final = b"\x28\xb5\x2f\xfd"  # RFC 8878 §3.1.1: every zstd frame starts with it
_local = threading.local()


class CorruptBody(ValueError):
    """A stored body that is not a zstd frame."""


def pack(body: bytes) -> bytes:
    """The body as stored: one zstd frame."""
    # One compressor per thread: it is not thread-safe, and making one for each message costs
    # more than compressing 2 KB.
    compressor = getattr(_local, "compressor", None)
    if compressor is None:
        compressor = _local.compressor = zstd.ZstdCompressor(level=LEVEL)
    try:
        return compressor.compress(body, zstd.ZstdCompressor.FLUSH_FRAME)
    except BaseException:
        _local.compressor = None  # it may be left inside a frame
        raise


def unpack(stored: bytes) -> bytes:
    """The body as received, from what `pack` made."""
    if not stored.startswith(_MAGIC):
        raise CorruptBody(f"a stored body that is not a zstd frame ({stored[:4]!r}...)")
    return zstd.decompress(stored)


def row(queue_id: str, trace_headers: bytes, body: bytes) -> dict[str, Any]:
    """A `message_bodies` row for a new message (compresses `body`)."""
    return {"message_id": queue_id, "trace_headers": trace_headers, "body": pack(body)}


@dataclass(frozen=True, slots=True)
class Content:
    """A message's trace headers and body, as stored (both empty once retention cleared them)."""

    trace_headers: bytes
    body: bytes

    @property
    def data(self) -> bytes:
        """The message as it is delivered: trace headers, then the body."""
        return self.trace_headers + self.body

    @classmethod
    def of(cls, row: Any) -> Content:
        """From a row selected with `CONTENT_COLUMNS` over `with_content(...)`."""
        if row.stored_body is not None:
            return cls(bytes(row.stored_trace_headers), unpack(bytes(row.stored_body)))
        return cls(bytes(row.inline_trace_headers), bytes(row.inline_body))


# What `Content.of` reads: the body row's columns (NULL for a message written before 0016) and
# the old inline ones (empty for one written since).
CONTENT_COLUMNS: Final = (message_bodies.c.trace_headers.label("stored_trace_headers"),
                          message_bodies.c.body.label("stored_body"),
                          messages.c.trace_headers.label("inline_trace_headers"),
                          messages.c.body.label("inline_body"))


def with_content(source: sa.FromClause = messages) -> sa.Join:
    """`source` (`messages`, or a join that holds it) with each message's body row, if it has one."""
    return source.outerjoin(message_bodies, message_bodies.c.message_id == messages.c.id)


def load(conn: Connection, ids: Iterable[str]) -> dict[str, Content]:
    """The content of the messages with these queue ids (those that exist)."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = conn.execute(sa.select(messages.c.id, *CONTENT_COLUMNS).select_from(with_content())
                        .where(messages.c.id.in_(wanted)))
    return {r.id: Content.of(r) for r in rows}


def present() -> sa.ColumnElement[bool]:
    """True for a message whose content is still stored (retention has not cleared it)."""
    inline = sa.func.length(messages.c.body) + sa.func.length(messages.c.trace_headers) > 0
    return sa.or_(inline, sa.exists().where(message_bodies.c.message_id == messages.c.id))


def stored_bytes(conn: Connection, ids: list[str]) -> int:
    """Bytes of content the messages `ids` hold on disk (compressed bodies as compressed)."""
    def total(table: sa.Table) -> sa.ColumnElement[int]:
        return sa.func.coalesce(sa.func.sum(sa.func.length(table.c.body) + sa.func.length(table.c.trace_headers)), 0)

    new = conn.execute(sa.select(total(message_bodies)).where(message_bodies.c.message_id.in_(ids))).scalar_one()
    old = conn.execute(sa.select(total(messages)).where(messages.c.id.in_(ids))).scalar_one()
    return int(new) + int(old)


def clear(conn: Connection, ids: list[str]) -> None:
    """Drop the content of the messages `ids`, keeping the messages (retention's `bodies`)."""
    delete(conn, ids)
    m = messages.c
    conn.execute(messages.update().where(m.id.in_(ids), sa.func.length(m.body) + sa.func.length(m.trace_headers) > 0)
                 .values(body=b"", trace_headers=b""))


def delete(conn: Connection, ids: list[str]) -> None:
    """Delete the body rows of the messages `ids`: before the messages themselves, explicitly,
    as their other children (SQLite's ON DELETE CASCADE needs the foreign_keys pragma)."""
    conn.execute(message_bodies.delete().where(message_bodies.c.message_id.in_(ids)))
