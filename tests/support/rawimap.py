"""An IMAP client over a raw socket for protocol tests: commands as bytes, answers as lines.

Literals in answers are read whole into their line; a tagged line or a BYE ends an answer.
"""

from __future__ import annotations

import re

from tests.support.clientsite import PASSWORD, ClientSite
from tests.support.rawclient import Raw as RawClient

USER = "jsmith@sitea.example.com"


class Raw(RawClient):
    """The raw client, reading IMAP answers up to a tag (literals read whole)."""

    def until_tagged(self, tag: bytes) -> list[bytes]:
        """Every line up to and including the one tagged `tag` (literals read whole)."""
        lines = []
        while True:
            line = self.line()
            while literal := re.search(rb"~?\{(\d+)\}$", line):
                size = int(literal.group(1))
                while len(self.buffer) < size:
                    chunk = self.sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed")
                    self.buffer += chunk
                line += b"\r\n" + self.buffer[:size]
                self.buffer = self.buffer[size:]
                line += self.line()
            lines.append(line)
            if line.startswith((tag + b" ", b"* BYE")):
                return lines

    def command(self, tag: bytes, text: bytes) -> list[bytes]:
        self.send(tag + b" " + text + b"\r\n")
        return self.until_tagged(tag)


def raw_plain(site: ClientSite) -> Raw:
    client = Raw(site.address, site.ports["imap"])
    assert client.line().startswith(b"* OK")
    return client


def raw_tls(site: ClientSite, *, login: bool = True, user: str = USER) -> Raw:
    client = Raw(site.address, site.ports["imaps"])
    client.start_tls()
    assert client.line().startswith(b"* OK")
    if login:
        reply = client.command(b"l1", b'LOGIN "%s" "%s"' % (user.encode(), PASSWORD.encode()))
        assert reply[-1].startswith(b"l1 OK"), reply
    return client
