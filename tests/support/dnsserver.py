"""A real authoritative-style DNS server on 127.0.0.1 for tests, built on dnslib.

UDP and TCP on the same free port, each served by a background thread. Tests fill an in-memory
zone (`mx`, `null_mx`, `a`, `txt`, `spf`, `ptr`, `cname`, `nodata`) and mark names as failing
(`servfail`, `rcode`, `timeout`); any other name is NXDOMAIN. `clear` empties the zone so one
server can serve many scenarios. CNAMEs are chased inside the zone, as an authoritative server
does. UDP answers larger than the client's buffer (512 bytes, or its EDNS
payload size) are sent truncated, so clients retry over TCP as real servers make them do.

Security: binds loopback only; for tests.
"""

from __future__ import annotations

import ipaddress
import socket
import socketserver
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dnslib import AAAA, CNAME, MX, PTR, QTYPE, RCODE, RR, TXT, A, DNSError, DNSLabel, DNSRecord

TTL = 60
MAX_CHAIN = 8  # CNAME links chased per answer; a loop stops here

TextData = str | bytes | Sequence[str | bytes]


@dataclass(frozen=True, slots=True)
class Query:
    """One question the server received (for assertions)."""

    name: str
    qtype: str
    transport: str  # "udp" or "tcp"


class FakeDNS:
    """An in-memory zone served over UDP and TCP on 127.0.0.1:`port`. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, list[tuple[str, object]]] = {}
        self._rcodes: dict[tuple[str, str], int] = {}  # (name, qtype or "*") -> RCODE
        self._timeout: set[tuple[str, str]] = set()
        self.queries: list[Query] = []
        self._udp: socketserver.ThreadingUDPServer | None = None
        self._tcp: socketserver.ThreadingTCPServer | None = None
        self._threads: list[threading.Thread] = []
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """'127.0.0.1:PORT', as `[dns] nameservers` takes it."""
        if not self.port:
            raise RuntimeError("FakeDNS is not started")
        return f"127.0.0.1:{self.port}"

    def start(self) -> FakeDNS:
        udp_handler, tcp_handler = _handlers(self._answer)
        # UDP and TCP share a port number; a free UDP port may be taken for TCP, so retry.
        for _ in range(20):
            udp = _UDPServer(("127.0.0.1", 0), udp_handler)
            port = udp.server_address[1]
            try:
                tcp = _TCPServer(("127.0.0.1", port), tcp_handler)
            except OSError:
                udp.server_close()
                continue
            break
        else:  # pragma: no cover - the loopback port space is not that busy
            raise RuntimeError("no free port for UDP and TCP on 127.0.0.1")
        self._udp, self._tcp, self.port = udp, tcp, port
        for server in (udp, tcp):
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                                      name=f"fake-dns-{port}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in (self._udp, self._tcp):
            if server is not None:
                server.shutdown()
                server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._udp = self._tcp = None
        self._threads = []

    def __enter__(self) -> FakeDNS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the zone ----------------------------------------------------------------------------

    def mx(self, domain: str, *hosts: tuple[int, str]) -> None:
        """MX records, e.g. mx("example.com", (10, "mx1.example.com"), (20, "mx2.example.com"))."""
        self._add(domain, [("MX", MX(host, pref)) for pref, host in hosts])

    def null_mx(self, domain: str) -> None:
        """RFC 7505: the single record `0 .`."""
        self._add(domain, [("MX", MX(".", 0))])

    def a(self, host: str, *ips: str) -> None:
        """A records for IPv4 addresses, AAAA for IPv6 ones."""
        records: list[tuple[str, object]] = []
        for ip in ips:
            addr = ipaddress.ip_address(ip)
            records.append(("A", A(str(addr))) if addr.version == 4 else ("AAAA", AAAA(str(addr))))
        self._add(host, records)

    def txt(self, name: str, text: TextData) -> None:
        """One TXT record; text over 255 bytes is split into 255-byte strings (RFC 1035 §3.3).
        A sequence gives the record's strings as they are (RFC 7208 §3.3 joins them)."""
        self._add(name, [("TXT", TXT(_strings(text)))])

    def spf(self, name: str, text: TextData) -> None:
        """One record of the obsolete SPF type 99 (RFC 4408 §3.1.1; RFC 7208 §3.1 drops it)."""
        self._add(name, [("SPF", TXT(_strings(text)))])

    def ptr(self, name: str, *targets: str) -> None:
        """PTR records at `name` (e.g. "4.3.2.1.in-addr.arpa")."""
        self._add(name, [("PTR", PTR(target)) for target in targets])

    def cname(self, name: str, target: str) -> None:
        """`name` is an alias of `target`."""
        self._add(name, [("CNAME", CNAME(target))])

    def nodata(self, name: str) -> None:
        """`name` exists but has no records of any type asked (NOERROR, empty answer)."""
        self._add(name, [])

    def servfail(self, name: str, qtype: str = "*") -> None:
        """Questions about `name` (only of `qtype`, e.g. "AAAA", if given) get SERVFAIL."""
        self.rcode(name, "SERVFAIL", qtype)

    def rcode(self, name: str, rcode: str | int, qtype: str = "*") -> None:
        """Questions about `name` (only of `qtype`, if given) get an empty answer with `rcode`
        ("SERVFAIL", "REFUSED", 2, ...)."""
        code = rcode if isinstance(rcode, int) else getattr(RCODE, rcode.upper())
        with self._lock:
            self._rcodes[(_key(name), qtype.upper())] = code

    def timeout(self, name: str, qtype: str = "*") -> None:
        """Questions about `name` (only of `qtype`, if given) are never answered."""
        with self._lock:
            self._timeout.add((_key(name), qtype.upper()))

    def clear(self) -> None:
        """Forget every record, failure and query: an empty zone."""
        with self._lock:
            self._records.clear()
            self._rcodes.clear()
            self._timeout.clear()
            self.queries.clear()

    def asked(self, name: str, qtype: str | None = None) -> list[Query]:
        """The questions received about `name` (and of `qtype`), in order."""
        with self._lock:
            return [q for q in self.queries
                    if q.name == _key(name) and (qtype is None or q.qtype == qtype)]

    def _add(self, name: str, records: list[tuple[str, object]]) -> None:
        with self._lock:
            self._records.setdefault(_key(name), []).extend(records)

    # -- answering ---------------------------------------------------------------------------

    def _answer(self, data: bytes, transport: str) -> bytes | None:
        """The reply to one DNS message, or None to stay silent."""
        try:
            request = DNSRecord.parse(data)
        except (DNSError, struct.error, IndexError, ValueError):
            return None
        if not request.questions:
            return None
        question = request.q
        name = _label_key(question.qname)
        qtype = QTYPE.get(question.qtype, str(question.qtype))
        reply = request.reply()  # QR, AA and RD copied; RA set
        with self._lock:
            self.queries.append(Query(name, qtype, transport))
            if {(name, "*"), (name, qtype)} & self._timeout:
                return None
            rcode = self._rcodes.get((name, qtype), self._rcodes.get((name, "*")))
            if rcode is not None:
                reply.header.rcode = rcode
            elif name not in self._records:
                reply.header.rcode = RCODE.NXDOMAIN
            else:
                self._fill(reply, name, question.qname, qtype)
        packed: bytes = reply.pack()
        if transport == "udp" and len(packed) > _udp_limit(request):
            # RFC 1035 §4.2.1 / RFC 2181 §9: set TC and let the client ask again over TCP.
            truncated = request.reply()
            truncated.header.tc = 1
            packed = truncated.pack()
        return packed

    def _fill(self, reply: DNSRecord, name: str, qname: object, qtype: str) -> None:
        """Add the records of `name` (following CNAMEs within the zone, RFC 1034 §3.6.2)."""
        seen: set[str] = set()
        for _ in range(MAX_CHAIN):
            seen.add(name)
            records = self._records.get(name, [])
            aliases = [rdata for rtype, rdata in records if rtype == "CNAME"]
            if aliases and qtype != "CNAME":
                reply.add_answer(RR(qname, QTYPE.CNAME, rdata=aliases[0], ttl=TTL))
                qname = aliases[0].label
                name = _label_key(qname)
                if name in seen or name not in self._records:
                    return  # a loop, or a target outside the zone: the client resolves it
                continue
            for rtype, rdata in records:
                if rtype == qtype or qtype == "ANY":
                    reply.add_answer(RR(qname, getattr(QTYPE, rtype), rdata=rdata, ttl=TTL))
            return


def _strings(text: TextData) -> list[bytes]:
    """TXT character-strings: one text cut into 255-byte pieces, or a sequence as given."""
    if isinstance(text, str | bytes):
        data = text.encode() if isinstance(text, str) else text
        return [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]
    return [part.encode() if isinstance(part, str) else part for part in text]


def _key(name: str) -> str:
    return name.lower().rstrip(".")


def _label_key(qname: DNSLabel) -> str:
    """The zone key of a name on the wire: labels joined as they are, so a name with spaces or
    other odd octets (RFC 2181 §11 allows any) matches the text it was added as."""
    return _key(".".join(label.decode("utf-8", "replace") for label in qname.label))


def _udp_limit(request: DNSRecord) -> int:
    for rr in request.ar:
        if rr.rtype == QTYPE.OPT:  # RFC 6891 §6.1.2: CLASS carries the requestor's payload size
            return max(512, int(rr.rclass))
    return 512


class _UDPServer(socketserver.ThreadingUDPServer):
    daemon_threads = True
    allow_reuse_address = False


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = False


Answerer = Callable[[bytes, str], "bytes | None"]


def _handlers(answer: Answerer) -> tuple[type[socketserver.BaseRequestHandler], type[socketserver.BaseRequestHandler]]:
    class UDPHandler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data, sock = self.request
            reply = answer(data, "udp")
            if reply is not None:
                sock.sendto(reply, self.client_address)

    class TCPHandler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            conn: socket.socket = self.request
            conn.settimeout(10)
            try:
                while True:  # RFC 7766 §6.2.1: several queries may share one connection
                    header = _recv_exactly(conn, 2)
                    if header is None:
                        return
                    data = _recv_exactly(conn, struct.unpack("!H", header)[0])
                    if data is None:
                        return
                    reply = answer(data, "tcp")
                    if reply is not None:
                        conn.sendall(struct.pack("!H", len(reply)) + reply)
            except OSError:
                return

    return UDPHandler, TCPHandler


def _recv_exactly(conn: socket.socket, size: int) -> bytes | None:
    buf = b""
    while len(buf) < size:
        chunk = conn.recv(size - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf
