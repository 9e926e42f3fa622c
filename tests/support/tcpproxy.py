"""A TCP proxy on loopback that a test can cut: the database "goes away" for one process only.

Stopping the shared PostgreSQL server would take every other test's database with it; cutting
the road to it fails the same way for the process under test (connections reset, new ones
closed at once) and leaves the server untouched.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading


class TCPProxy:
    def __init__(self, target: tuple[str, int], host: str = "127.0.0.1") -> None:
        self.target = target
        self._listener = socket.create_server((host, 0))
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._up = True
        self._closed = False
        self.refused = 0  # connections closed at once while cut
        self._thread = threading.Thread(target=self._accept, name="tcpproxy", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self.address[1]

    def cut(self) -> None:
        """Reset every connection; from now on new ones are closed as soon as accepted."""
        with self._lock:
            self._up = False
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    sock.close()

    def restore(self) -> None:
        with self._lock:
            self._up = True

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                up = self._up
            if not up:
                self.refused += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                up = self._up
                if up:
                    self._pairs.append((client, upstream))
            if not up:  # cut while this one was connecting: it must not outlive the cut
                self.refused += 1
                client.close()
                upstream.close()
                continue
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        try:
            sel.register(a, selectors.EVENT_READ, b)
            sel.register(b, selectors.EVENT_READ, a)
            while True:
                for key, _ in sel.select(timeout=1.0):
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = src.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
        except (OSError, ValueError):
            return
        finally:
            sel.close()
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()
