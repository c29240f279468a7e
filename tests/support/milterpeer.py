"""An outside mail server that is not ours: Debian's Postfix with OpenDKIM and OpenDMARC milters.

The peer is a private Postfix (bench/_postfix.py's `PrivatePostfix`, Maildir delivery for
`peer.test`) on one loopback address, with OpenDKIM (verifying what arrives from outside,
signing what its own `InternalHosts` hand it, with a key made by `opendkim-genkey`) and
OpenDMARC (judging DMARC, with SPF checked itself) as milters, each on its own loopback port.

Name resolution: the milters resolve through the system's resolver library (OpenDMARC,
libspf2) or libunbound forwarding to `Nameservers` (OpenDKIM), which read /etc/resolv.conf
or ask port 53. So each milter runs in a mount namespace of its own (`unshare --mount`) whose
/etc/resolv.conf names the test's DNS server, and that server listens on port 53 of an
address of the test's own loopback block: no query leaves loopback, and the machine's
resolver configuration is never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench._postfix import PrivatePostfix
from tests.support.org import free_port

OPENDKIM = shutil.which("opendkim") or "/usr/sbin/opendkim"
OPENDMARC = shutil.which("opendmarc") or "/usr/sbin/opendmarc"
GENKEY = shutil.which("opendkim-genkey") or "/usr/sbin/opendkim-genkey"
PEER_DOMAIN = "peer.test"
PEER_SELECTOR = "peer"


def available() -> bool:
    """Whether Postfix, OpenDKIM, OpenDMARC and unshare(1) are installed and usable here."""
    tools = ("/usr/sbin/postfix", OPENDKIM, OPENDMARC, GENKEY)
    return (
        os.geteuid() == 0 and all(Path(t).exists() for t in tools) and bool(shutil.which("unshare"))
    )


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


def _wait_port(host: str, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as exc:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"{log.stem} did not start: {log.read_text(errors='replace')}"
                ) from exc
            time.sleep(0.05)


@contextmanager
def _milter(
    name: str, command: list[str], resolv: Path, logs: Path, where: tuple[str, int]
) -> Iterator[None]:
    """Run one milter in the foreground, in its own mount namespace (see the module doc)."""
    log = logs / f"{name}.log"
    inner = f"mount --bind {resolv} /etc/resolv.conf && exec " + " ".join(command)
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_port(*where, process, log)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


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
    """The peer: Postfix on `address` with its milters on `dkim_address`/`dmarc_address`,
    resolving through the DNS server on `dns_address`:53; mail it is handed by
    `internal_client` is signed by OpenDKIM and relayed to `relayhost` ("[ip]:port")."""
    logs = root / "logs"
    keys = root / "keys"
    for folder in (logs, keys):
        folder.mkdir(parents=True, exist_ok=True)
    key_txt = _key(keys)
    resolv = root / "resolv.conf"
    resolv.write_text(f"nameserver {dns_address}\noptions attempts:1 timeout:2\n")
    dkim_port, dmarc_port = free_port(dkim_address), free_port(dmarc_address)
    (root / "opendkim.conf").write_text(
        "\n".join(
            [
                "Syslog no",
                "Mode sv",
                f"Socket inet:{dkim_port}@{dkim_address}",
                f"PidFile {root / 'opendkim.pid'}",
                f"Nameservers {dns_address}",
                f"AuthservID {PEER_DOMAIN}",
                f"Domain {PEER_DOMAIN}",
                f"Selector {PEER_SELECTOR}",
                f"KeyFile {keys / (PEER_SELECTOR + '.private')}",
                f"InternalHosts {internal_client}",
                "Canonicalization relaxed/simple",
                "On-BadSignature accept",
                "On-NoSignature accept",
                "On-DNSError accept",
                "RequireSafeKeys false",
                "",
            ]
        )
    )
    ignore = root / "dmarc-ignore"
    ignore.write_text(f"{internal_client}\n")
    (root / "opendmarc.conf").write_text(
        "\n".join(
            [
                "Syslog false",
                f"Socket inet:{dmarc_port}@{dmarc_address}",
                f"PidFile {root / 'opendmarc.pid'}",
                f"AuthservID {PEER_DOMAIN}",
                f"TrustedAuthservIDs {PEER_DOMAIN}",
                f"IgnoreHosts {ignore}",
                "SPFSelfValidate true",
                "RejectFailures false",
                "RequiredHeaders false",
                "PublicSuffixList /usr/share/publicsuffix/public_suffix_list.dat",
                "",
            ]
        )
    )
    with ExitStack() as stack:
        stack.enter_context(
            _milter(
                "opendkim",
                [OPENDKIM, "-f", "-x", str(root / "opendkim.conf")],
                resolv,
                logs,
                (dkim_address, dkim_port),
            )
        )
        stack.enter_context(
            _milter(
                "opendmarc",
                [OPENDMARC, "-f", "-c", str(root / "opendmarc.conf")],
                resolv,
                logs,
                (dmarc_address, dmarc_port),
            )
        )
        milters = f"inet:{dkim_address}:{dkim_port}, inet:{dmarc_address}:{dmarc_port}"
        postfix = PrivatePostfix(
            ip=address,
            port=port,
            mode="maildir",
            domain=PEER_DOMAIN,
            mailbox_users=["friend"],
            extra_main_cf={
                "smtpd_milters": milters,
                "non_smtpd_milters": "",
                "milter_default_action": "tempfail",
                "milter_protocol": "6",
                "relayhost": relayhost,
                "default_transport": "smtp",
                "relay_transport": "smtp",
                "smtp_bind_address": address,
                "myhostname": f"mx.{PEER_DOMAIN}",
                "smtp_tls_security_level": "may",
            },
        )
        stack.enter_context(postfix)
        yield MilterPeer(postfix, address, port, key_txt, logs)
