"""A raw line-oriented client for protocol tests: what a hostile or broken client sends.

Real sockets, no protocol library in between; can switch to TLS mid-stream.
"""

from __future__ import annotations

import socket
import ssl

from tests.support.clientsite import client_tls


class Raw:
    """A line-oriented raw client that can switch to TLS mid-stream."""

    def __init__(self, address: str, port: int) -> None:
        self.sock: socket.socket = socket.create_connection((address, port), timeout=20)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def until(self, prefix: bytes) -> list[bytes]:
        lines = [self.line()]
        while not lines[-1].startswith(prefix):
            lines.append(self.line())
        return lines

    def start_tls(self) -> None:
        assert self.buffer == b"", self.buffer  # nothing left unread in clear
        self.sock = client_tls().wrap_socket(self.sock)

    def closed_by_server(self) -> bool:
        """True if the server has closed the connection (reads EOF or a reset)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buffer += chunk
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            return True

    def close(self) -> None:
        self.sock.close()
