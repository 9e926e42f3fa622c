"""A deliberately dumb SMTP client: sends exactly the bytes a test gives, reads whole replies."""

from __future__ import annotations

import base64
import socket
import ssl


def auth_plain(user: str, password: str, authzid: str = "") -> str:
    """The AUTH PLAIN command line with its initial response (RFC 4616)."""
    token = base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()
    return f"AUTH PLAIN {token}"


class RawClient:
    def __init__(self, port: int, *, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> tuple[int, str]:
        """Read one (possibly multi-line) reply; (code, full text)."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"closed; got so far {self.buf!r} after {lines!r}")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line.decode())
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3]), "\n".join(lines)

    def cmd(self, line: str | bytes) -> tuple[int, str]:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def starttls(self, context: ssl.SSLContext) -> None:
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")

    def closed(self, timeout: float = 5.0) -> bool:
        """True when the server has closed the connection (EOF)."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except (ConnectionError, ssl.SSLError):
            return True

    def close(self) -> None:
        self.sock.close()
