"""Lease owners: a name for each start of each delivering process, kept alive by a heartbeat.

A lease ends when its work is recorded or when its owner is proven dead (its row goes and its
leases with it); never because another process starts, and never by time alone while its owner
has a row: not after a database outage longer than `lease_seconds`, not during one long
transaction. `lease_until` still frees the leases of an owner without a row (a version before
heartbeats, or one buried at the moment it claimed). Names are unique per process start (host, pid and a
random token), so two nodes on one host, or a restarted parent and the worker it left
behind, can never mistake each other's leases for their own.

Proof of death, either of:
- the owner ran on this machine (same boot, same PID namespace: `local_id`) and its PID no
  longer exists. A restarted node takes over what its killed predecessor held at once. A PID
  that exists may be a new process under a recycled number: then only the heartbeat decides.
- its row in `nodes` has not changed for `dead_after` seconds of the *observer's* monotonic
  clock. No timestamps are compared between hosts (clocks may disagree), and an observer that
  could not reach the database proves nothing: it forgets what it saw and starts watching
  afresh, so after an outage every node gets `dead_after` seconds to beat again.

Security: PIDs read from the database are only probed with signal 0 (existence), and only when
the row's `local_id` says they belong to this machine's PID namespace; anyone who can write the
nodes table can already steer the queue.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mailrelay.store.clock import local_offset
from mailrelay.store.schema import nodes, recipients

NAME_MAX = 64  # recipients.lease_owner
INBOUND_SUFFIX = "/inbound"  # a node's inbound dispatcher leases under `name + INBOUND_SUFFIX`
_HOST_MAX = 32  # leaves room for ".<pid>.<token>", "-dN" and "/inbound"


def new_name(host: str, suffix: str = "") -> str:
    """A lease owner name unique to this start of this process: `host.pid.token` + suffix."""
    name = f"{host[:_HOST_MAX]}.{os.getpid()}.{secrets.token_hex(3)}{suffix}"
    return name[:NAME_MAX]


@functools.cache
def local_id() -> str | None:
    """This machine's boot and PID namespace: two processes with the same value see each
    other's PIDs. None where /proc does not tell (not Linux)."""
    with contextlib.suppress(OSError):
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}:{os.stat('/proc/self/ns/pid').st_ino}"[:80]
    return None


def register(conn: Connection, *, name: str, host: str, now: float) -> None:
    conn.execute(nodes.insert().values(name=name, host=host[:255], pid=os.getpid(), local_id=local_id(),
                                       started_at=now, heartbeat_at=now))


def beat(conn: Connection, *, name: str, host: str, now: float) -> bool:
    """Our heartbeat; False if our row was gone (another node took us for dead and handed
    back our leases: we were cut off for longer than `dead_after`). The row is put back."""
    if conn.execute(nodes.update().where(nodes.c.name == name).values(heartbeat_at=now)).rowcount:
        return True
    register(conn, name=name, host=host, now=now)
    return False


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    heartbeat_at: float
    pid: int
    local_id: str | None


def heartbeats(conn: Connection) -> list[Node]:
    return [Node(r.name, r.heartbeat_at, r.pid, r.local_id) for r in conn.execute(
        sa.select(nodes.c.name, nodes.c.heartbeat_at, nodes.c.pid, nodes.c.local_id))]


def gone_here(rows: Iterable[Node], *, me: str) -> list[Node]:
    """The nodes that ran on this machine and whose process no longer exists."""
    here = local_id()
    if here is None:
        return []
    return [n for n in rows if n.name != me and n.local_id == here and not _pid_exists(n.pid)]


def _pid_exists(pid: int) -> bool:
    if pid <= 0:
        return True  # not a PID we can judge
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, under another user
    return True


def lease_free(now: float) -> sa.ColumnElement[bool]:
    """The recipients nobody is working on: no lease, or one past `lease_until` whose owner
    has no row (a live owner's lease ends only by burial)."""
    r = recipients
    owner_alive = sa.exists().where(sa.or_(nodes.c.name == r.c.lease_owner,
                                           nodes.c.name + INBOUND_SUFFIX == r.c.lease_owner))
    return sa.or_(r.c.lease_owner.is_(None), r.c.lease_until.is_(None),
                  sa.and_(r.c.lease_until < now, ~owner_alive))


def owned_by(names: Iterable[str]) -> list[str]:
    """Every lease owner name a node uses: its own, and its inbound dispatcher's."""
    return [owner for name in names for owner in (name, f"{name}{INBOUND_SUFFIX}"[:NAME_MAX])]


def hand_back_all(conn: Connection, *, owners: Iterable[str], now: float) -> int:
    """Every lease of these owners is interrupted work: due again now. Recorded outcomes clear
    the lease, so only recipients still being worked on carry one."""
    owners = list(owners)
    if not owners:
        return 0
    result = conn.execute(recipients.update().where(recipients.c.lease_owner.in_(owners))
                          .values(lease_owner=None, lease_until=None, next_attempt_at=now, updated_at=now))
    return int(result.rowcount or 0)


def bury(conn: Connection, *, name: str, heartbeat_at: float, now: float) -> int | None:
    """A dead node: remove its row, if it has not beaten since we looked, and hand back its
    leases. None when it beat meanwhile (alive after all)."""
    gone = conn.execute(nodes.delete().where(nodes.c.name == name, nodes.c.heartbeat_at == heartbeat_at))
    if not gone.rowcount:
        return None
    return hand_back_all(conn, owners=owned_by([name]), now=now)


def leave(conn: Connection, *, name: str, now: float) -> int:
    """A clean stop: what we still lease was interrupted; our row goes."""
    conn.execute(nodes.delete().where(nodes.c.name == name))
    return hand_back_all(conn, owners=owned_by([name]), now=now)


@dataclass
class _Seen:
    heartbeat_at: float
    changed_at: float  # our monotonic clock when we first saw this value


class Watch:
    """Which other nodes are dead, judged by what this node saw of their heartbeats."""

    def __init__(self, *, me: str, dead_after: float) -> None:
        self.me = me
        self.dead_after = dead_after
        self._seen: dict[str, _Seen] = {}

    def forget(self) -> None:
        """We could not see the database: nothing seen before proves anything now."""
        self._seen.clear()

    def dead(self, rows: Iterable[Node], *, now: float) -> list[Node]:
        """The nodes whose heartbeat stood still for `dead_after`."""
        out = []
        present = set()
        for node in rows:
            name, heartbeat_at = node.name, node.heartbeat_at
            if name == self.me:
                continue
            present.add(name)
            seen = self._seen.get(name)
            if seen is None or seen.heartbeat_at != heartbeat_at:
                self._seen[name] = _Seen(heartbeat_at, now)
            elif now - seen.changed_at >= self.dead_after:
                out.append(node)
        for name in set(self._seen) - present:
            del self._seen[name]
        return out


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One row of `mailrelay node list`."""

    name: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    leased: int  # recipients it is delivering (or posting to a parse webhook) now


def listing(conn: Connection) -> list[NodeInfo]:
    """Every process holding leases, with how many; oldest first. Its times are written on the
    queue's clock (store.clock) and returned on this machine's, to compare with `time.time()`."""
    shift = local_offset(conn)
    rows = conn.execute(sa.select(nodes).order_by(nodes.c.started_at, nodes.c.name)).all()
    counts: dict[str, int] = {}
    owners = owned_by(r.name for r in rows)
    if owners:
        counts = {r.lease_owner: int(r.n) for r in conn.execute(
            sa.select(recipients.c.lease_owner, sa.func.count().label("n"))
            .where(recipients.c.lease_owner.in_(owners)).group_by(recipients.c.lease_owner))}
    return [NodeInfo(r.name, r.host, r.pid, r.started_at + shift, r.heartbeat_at + shift,
                     sum(counts.get(o, 0) for o in owned_by([r.name]))) for r in rows]


@dataclass(frozen=True, slots=True)
class HostSummary:
    """The delivering processes of one host (`mailrelay status`, the operator's nodes page)."""

    host: str
    up: int  # processes whose heartbeat is younger than dead_after, by this machine's clock
    workers: int  # processes with a row
    leased: int
    last_seen: float  # the newest heartbeat


def by_host(found: Iterable[NodeInfo], now: float, dead_after: float) -> list[HostSummary]:
    """The processes grouped by host, in host order."""
    hosts: dict[str, list[NodeInfo]] = {}
    for n in found:
        hosts.setdefault(n.host, []).append(n)
    return [HostSummary(host, sum(1 for n in rows if node_state(now - n.heartbeat_at, dead_after) == "alive"),
                        len(rows), sum(n.leased for n in rows), max(n.heartbeat_at for n in rows))
            for host, rows in sorted(hosts.items())]


def node_state(silent: float, dead_after: float) -> str:
    """"alive" or "silent": an operator's hint from the wall clocks of two machines. The nodes
    themselves never compare clocks: they bury a node whose heartbeat stops changing."""
    return "silent" if silent >= dead_after else "alive"


def node_json(n: NodeInfo, now: float, dead_after: float) -> dict[str, Any]:
    """One node as `node list --json` and the operator API show it."""
    return {"name": n.name, "host": n.host, "pid": n.pid, "started_at": n.started_at,
            "heartbeat_at": n.heartbeat_at, "state": node_state(now - n.heartbeat_at, dead_after), "leased": n.leased}
