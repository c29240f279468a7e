"""The lab's Internet: one outside mail server, for `internet.test`, on loopback.

One job: be the rest of the world for the lab's sites. It accepts mail for internet.test
over SMTP (aiosmtpd) at the address the lab DNS's MX for internet.test names, verifies each
message's DKIM signatures on arrival with dkimpy, as an outside receiver does (the public
keys looked up in the lab's DNS, never read from the sites), keeps the message in
`internet/mail/` (written and fsynced before 250) and appends what it found to
`internet/received.jsonl`: the Message-ID, envelope, and `dkim` = pass (a signature
verifies), fail (signatures, none verifying) or none (unsigned), with the passing d= and s=.
`received()` reads those lines back for `lab up` and the tests.

It takes mail for internet.test only (550 5.7.1 for any other domain: it is no relay).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import uuid
from dataclasses import asdict, dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import Any

import dkim
import dns.exception
import dns.resolver
from aiosmtpd.controller import Controller

__all__ = [
    "INTERNET_DOMAIN",
    "INTERNET_HOST",
    "INTERNET_OCTET",
    "Arrival",
    "received",
    "reverse_zone",
    "serve_internet",
    "zone_lines",
]

INTERNET_DOMAIN = "internet.test"  # RFC 2606: a name the real Internet never resolves
INTERNET_HOST = f"mx.{INTERNET_DOMAIN}"
INTERNET_OCTET = 40  # its address on the lab's /24 (.30 is the lab tests' Postfix)
FOLDER = "internet"
LOG = "received.jsonl"


@dataclass(frozen=True, slots=True)
class Arrival:
    message_id: str
    mail_from: str
    rcpt_to: list[str]
    dkim: str  # pass, fail or none
    signer: str  # "d=example.com s=sitea" of the passing signature(s); why it failed else
    file: str


def zone_lines(net: str) -> list[str]:
    """The Internet's records in the lab DNS: its zone, MX, A and the PTR of its address."""
    address = f"{net}.{INTERNET_OCTET}"
    return [
        f"{INTERNET_DOMAIN}. IN SOA ns.{INTERNET_DOMAIN}. hostmaster.{INTERNET_DOMAIN}. "
        "1 3600 600 86400 60",
        f"{INTERNET_DOMAIN}. IN MX 10 {INTERNET_HOST}.",
        f"{INTERNET_HOST}. IN A {address}",
        f'{INTERNET_DOMAIN}. IN TXT "v=spf1 ip4:{address} -all"',
        f"{INTERNET_OCTET}.{reverse_zone(net)} IN PTR {INTERNET_HOST}.",
    ]


def reverse_zone(net: str) -> str:
    """The in-addr.arpa zone of the lab's /24, e.g. 10.10.127.in-addr.arpa."""
    return ".".join(reversed(net.split("."))) + ".in-addr.arpa."


def received(root: Path) -> list[Arrival]:
    """Every message the lab's Internet has taken, oldest first."""
    path = root / FOLDER / LOG
    if not path.exists():
        return []
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError, TypeError):
            found.append(Arrival(**json.loads(line)))
    return found


class _Verifier:
    """DKIM verification with keys from the lab's DNS only."""

    def __init__(self, nameserver: tuple[str, int]) -> None:
        self._resolver = dns.resolver.Resolver(configure=False)
        self._resolver.nameservers = [nameserver[0]]
        self._resolver.port = nameserver[1]
        self._resolver.cache = None

    def _txt(self, name: bytes | str, timeout: float = 5) -> bytes | None:
        """dkimpy's dnsfunc: the first TXT record of `name`, its strings joined."""
        text = name.decode("ascii") if isinstance(name, bytes) else name
        try:
            answer = self._resolver.resolve(
                text, "TXT", lifetime=timeout, raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN:
            return None
        except dns.exception.DNSException as exc:
            raise dkim.DnsTimeoutError(str(exc)) from exc
        for rdata in answer.rrset or []:
            return b"".join(rdata.strings)
        return None

    def verify(self, message: bytes) -> tuple[str, str]:
        """(pass | fail | none, which signature passed or why none did)."""
        headers = BytesHeaderParser(policy=compat32).parsebytes(message)
        count = len(headers.get_all("DKIM-Signature") or [])
        if not count:
            return "none", "no DKIM-Signature"
        checker = dkim.DKIM(message)
        passed, why = [], []
        for index in range(count):
            try:
                ok = checker.verify(idx=index, dnsfunc=self._txt)
            except dkim.DKIMException as exc:  # bad signature or key record: a failure
                ok, reason = False, str(exc)
            else:
                reason = "signature does not verify"
            signer = f"d={_text(checker.domain)} s={_text(checker.selector)}"
            if ok:
                passed.append(signer)
            else:
                why.append(f"{signer}: {reason}")
        if passed:
            return "pass", ", ".join(passed)
        return "fail", "; ".join(why)


def _text(value: object) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


class _Handler:
    """aiosmtpd's handler: internet.test recipients only; store, verify, record."""

    def __init__(self, folder: Path, verifier: _Verifier) -> None:
        self.folder = folder
        self.verifier = verifier
        self._lock = threading.Lock()

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if not address.lower().endswith(f"@{INTERNET_DOMAIN}"):
            return "550 5.7.1 relaying denied: this server takes mail for internet.test only"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        data = bytes(envelope.original_content or envelope.content)
        arrival = await asyncio.to_thread(self._keep, envelope, data)
        return f"250 2.0.0 kept as {Path(arrival.file).name} (dkim={arrival.dkim})"

    def _keep(self, envelope: Any, data: bytes) -> Arrival:
        verdict, signer = self.verifier.verify(data)
        path = self.folder / "mail" / f"{uuid.uuid4().hex}.eml"
        with path.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        headers = BytesHeaderParser(policy=compat32).parsebytes(data)
        arrival = Arrival(
            message_id=str(headers.get("Message-ID", "")).strip(),
            mail_from=str(envelope.mail_from),
            rcpt_to=list(envelope.rcpt_tos),
            dkim=verdict,
            signer=signer,
            file=str(path),
        )
        with self._lock, (self.folder / LOG).open("a", encoding="utf-8") as log:
            log.write(json.dumps(asdict(arrival)) + "\n")
            log.flush()
            os.fsync(log.fileno())
        return arrival


def serve_internet(root: Path, address: str, port: int, nameserver: tuple[str, int]) -> None:
    """Run the lab's Internet until SIGTERM (the `lab internet-serve` process)."""
    folder = root / FOLDER
    (folder / "mail").mkdir(parents=True, exist_ok=True)
    handler = _Handler(folder, _Verifier(nameserver))
    controller = Controller(
        handler, hostname=address, port=port, server_hostname=INTERNET_HOST, ready_timeout=30
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    controller.start()
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()
