"""A TCP server on loopback that accepts connections and never says a word.

What a database host looks like when its port is open but the server behind it hangs (or a
firewall accepts and drops): the client's connect succeeds, its first read waits forever.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType


class Blackhole:
    """`with Blackhole() as hole:` listens on 127.0.0.1:`hole.port` until the block ends."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed by __exit__
                return
            self.accepted.append(conn)  # held open, never read from or written to

    def __enter__(self) -> Blackhole:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)
        for conn in self.accepted:
            conn.close()
