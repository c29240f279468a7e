"""An outside mail server that is not ours: Debian's Postfix with OpenDKIM and OpenDMARC milters.

The peer is a private Postfix (bench/_postfix.py's `PrivatePostfix`, Maildir delivery for
`peer.test`) on one loopback address, with OpenDKIM (verifying what arrives from outside,
signing what its one internal client hands it, with a key made by `opendkim-genkey`) and
OpenDMARC (judging DMARC, with SPF checked itself) as milters (bench/_milters.py, which also
says how they resolve names through the test's DNS server only).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench._milters import SigningKey, milters, milters_available
from bench._postfix import PrivatePostfix

GENKEY = shutil.which("opendkim-genkey") or "/usr/sbin/opendkim-genkey"
PEER_DOMAIN = "peer.test"
PEER_SELECTOR = "peer"


def available() -> bool:
    """Whether Postfix, OpenDKIM, OpenDMARC and their tools are here, and we are root."""
    return milters_available() and all(Path(t).exists() for t in ("/usr/sbin/postfix", GENKEY))


@dataclass
class MilterPeer:
    postfix: PrivatePostfix
    address: str  # where Postfix listens (port `port`), and the source of its outbound mail
    port: int
    key_txt: str  # the TXT value of peer._domainkey.peer.test, as opendkim-genkey wrote it
    logs: Path

    def maildir(self, user: str = "friend") -> list[bytes]:
        folder = self.postfix.mail_dir / PEER_DOMAIN / user / "new"
        return [p.read_bytes() for p in sorted(folder.glob("*"))] if folder.is_dir() else []

    def wait_for(self, marker: bytes, limit: float = 30.0) -> bytes:
        """The delivered message containing `marker`."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            for message in self.maildir():
                if marker in message:
                    return message
            time.sleep(0.1)
        raise AssertionError(
            f"nothing with {marker!r} delivered at the peer; logs:\n{self.log_text()}"
        )

    def log_text(self) -> str:
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            parts.append(f"== {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        try:
            parts.append(self.postfix.log_tail())
        except Exception as exc:  # the tail is only for the failure message
            parts.append(f"(no postfix log: {exc!r})")
        return "\n".join(parts)


def _key(folder: Path) -> str:
    """Make the peer's signing key with opendkim-genkey; its record's TXT value."""
    subprocess.run(
        [GENKEY, "-b", "2048", "-d", PEER_DOMAIN, "-s", PEER_SELECTOR, "-D", str(folder)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    zone = (folder / f"{PEER_SELECTOR}.txt").read_text()
    return "".join(re.findall(r'"([^"]*)"', zone))


@contextmanager
def milter_peer(
    root: Path,
    *,
    address: str,
    port: int,
    dkim_address: str,
    dmarc_address: str,
    dns_address: str,
    internal_client: str,
    relayhost: str,
) -> Iterator[MilterPeer]:
    """The peer: Postfix on `address`:`port`, its milters on `dkim_address`/`dmarc_address`,
    resolving through the DNS server on `dns_address`:53; mail it is handed by
    `internal_client` is signed by OpenDKIM and relayed to `relayhost` ("[ip]:port")."""
    keys = root / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    key_txt = _key(keys)
    sign = SigningKey(
        PEER_DOMAIN, PEER_SELECTOR, keys / f"{PEER_SELECTOR}.private", internal_client
    )
    with (
        milters(
            root,
            dkim_address=dkim_address,
            dmarc_address=dmarc_address,
            dns_address=dns_address,
            authserv_id=PEER_DOMAIN,
            sign=sign,
        ) as smtpd_milters,
        PrivatePostfix(
            ip=address,
            port=port,
            mode="maildir",
            domain=PEER_DOMAIN,
            mailbox_users=["friend"],
            extra_main_cf={
                "smtpd_milters": smtpd_milters,
                "non_smtpd_milters": "",
                "milter_default_action": "tempfail",
                "relayhost": relayhost,
                "default_transport": "smtp",
                "relay_transport": "smtp",
                "smtp_bind_address": address,
                "myhostname": f"mx.{PEER_DOMAIN}",
                "smtp_tls_security_level": "may",
            },
        ) as postfix,
    ):
        yield MilterPeer(postfix, address, port, key_txt, root / "logs")
