"""OpenDKIM and OpenDMARC as Postfix milters, privately on loopback: the outside world's checks.

Stdlib only (as _postfix.py). `milters()` starts OpenDKIM (verifying; signing too when given a
key) and OpenDMARC (with its own SPF check), each in the foreground on its own loopback
address and port, and yields the `smtpd_milters` value for a `PrivatePostfix`.

Name resolution: OpenDMARC and libspf2 use the C library's resolver (/etc/resolv.conf, port
53), OpenDKIM libunbound forwarding to `Nameservers` (port 53). So each milter runs in a mount
namespace of its own (`unshare --mount`) whose /etc/resolv.conf names `dns_address`, where the
caller runs a DNS server on port 53: no query leaves loopback, the machine's own resolver
configuration is never touched. Needs root (unshare, port 53) and Debian's opendkim and
opendmarc packages (scripts/test-deps.sh).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SigningKey", "milters", "milters_available"]

OPENDKIM = shutil.which("opendkim") or "/usr/sbin/opendkim"
OPENDMARC = shutil.which("opendmarc") or "/usr/sbin/opendmarc"
PUBLIC_SUFFIX_LIST = "/usr/share/publicsuffix/public_suffix_list.dat"


@dataclass(frozen=True)
class SigningKey:
    """What OpenDKIM signs with, for mail its `internal_client` hands the Postfix."""

    domain: str
    selector: str
    key_file: Path  # PEM, as opendkim-genkey writes it
    internal_client: str  # the only host whose mail is signed (and not verified)


def milters_available() -> bool:
    """Whether OpenDKIM, OpenDMARC and unshare(1) are installed and we are root."""
    tools = (OPENDKIM, OPENDMARC)
    return (
        os.geteuid() == 0 and all(Path(t).exists() for t in tools) and bool(shutil.which("unshare"))
    )


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _wait_port(host: str, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as exc:
            if process.poll() is not None or time.monotonic() > deadline:
                text = log.read_text(errors="replace")
                raise RuntimeError(f"{log.stem} did not start: {text}") from exc
            time.sleep(0.05)


@contextmanager
def _milter(command: list[str], resolv: Path, log: Path, where: tuple[str, int]) -> Iterator[None]:
    """One milter in the foreground, in its own mount namespace; stopped by its pid."""
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


def _opendkim_conf(
    root: Path, address: str, port: int, dns_address: str, authserv_id: str, sign: SigningKey | None
) -> Path:
    lines = [
        "Syslog no",
        "Mode sv" if sign else "Mode v",
        f"Socket inet:{port}@{address}",
        f"PidFile {root / 'opendkim.pid'}",
        f"Nameservers {dns_address}",
        f"AuthservID {authserv_id}",
        "Canonicalization relaxed/simple",
        "On-BadSignature accept",
        "On-NoSignature accept",
        "On-DNSError accept",
        "RequireSafeKeys false",
    ]
    if sign is not None:
        lines += [
            f"Domain {sign.domain}",
            f"Selector {sign.selector}",
            f"KeyFile {sign.key_file}",
            f"InternalHosts {sign.internal_client}",
        ]
    else:
        # Nothing internal (the default is 127.0.0.1, a load generator's address): a
        # documentation address (RFC 5737) that never connects, so everything is verified.
        lines.append("InternalHosts 192.0.2.1")
    path = root / "opendkim.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def _opendmarc_conf(
    root: Path, address: str, port: int, authserv_id: str, ignore: str | None
) -> Path:
    hosts = root / "dmarc-ignore"
    hosts.write_text(f"{ignore}\n" if ignore else "")
    lines = [
        "Syslog false",
        f"Socket inet:{port}@{address}",
        f"PidFile {root / 'opendmarc.pid'}",
        f"AuthservID {authserv_id}",
        f"TrustedAuthservIDs {authserv_id}",
        f"IgnoreHosts {hosts}",
        "SPFSelfValidate true",
        "RejectFailures false",
        "RequiredHeaders false",
        f"PublicSuffixList {PUBLIC_SUFFIX_LIST}",
    ]
    path = root / "opendmarc.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


@contextmanager
def milters(
    root: Path,
    *,
    dkim_address: str,
    dmarc_address: str,
    dns_address: str,
    authserv_id: str,
    sign: SigningKey | None = None,
) -> Iterator[str]:
    """OpenDKIM then OpenDMARC, running; yields Postfix's `smtpd_milters` value."""
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    resolv = root / "resolv.conf"
    resolv.write_text(f"nameserver {dns_address}\noptions attempts:1 timeout:2\n")
    dkim_port, dmarc_port = _free_port(dkim_address), _free_port(dmarc_address)
    dkim_conf = _opendkim_conf(root, dkim_address, dkim_port, dns_address, authserv_id, sign)
    ignore = sign.internal_client if sign else None
    dmarc_conf = _opendmarc_conf(root, dmarc_address, dmarc_port, authserv_id, ignore)
    with ExitStack() as stack:
        stack.enter_context(
            _milter(
                [OPENDKIM, "-f", "-x", str(dkim_conf)],
                resolv,
                logs / "opendkim.log",
                (dkim_address, dkim_port),
            )
        )
        stack.enter_context(
            _milter(
                [OPENDMARC, "-f", "-c", str(dmarc_conf)],
                resolv,
                logs / "opendmarc.log",
                (dmarc_address, dmarc_port),
            )
        )
        yield f"inet:{dkim_address}:{dkim_port}, inet:{dmarc_address}:{dmarc_port}"
