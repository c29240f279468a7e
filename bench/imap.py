"""Benchmark: imaplib reading one big INBOX from sitemail and from Dovecot, side by side (issue 7).

The same 10,000 messages (1-6 KB, varied headers) are put in a sitemail mailbox (through the
mailbox store, as local delivery writes them) and in a Maildir served by a private Debian
Dovecot (dovecot-imapd) on another loopback address. Both listen with implicit TLS (993-style)
and the site's own certificate; one imaplib client then, for each server in turn:

  login   connect, TLS handshake, LOGIN
  select  SELECT INBOX
  headers FETCH 1:10000 (BODY.PEEK[HEADER])
  bodies  FETCH 1:1000 (BODY.PEEK[])

"first" is the first session after the server started (sitemail loads the folder's metadata;
Dovecot builds its index and cache from the Maildir); "warm" is the median of the following
runs. Both servers run at once and their warm sessions alternate, so the machine's load
(other work shares its cores) weighs on both alike; the headline ratio, sitemail / Dovecot,
is the median of the per-round ratios. Wall time on a loaded machine also measures how soon
each server gets a core back; so the bench also reports "work cpu", the CPU seconds every
process of each server used for the work (from /proc, reaped children included), which the
load hardly moves. LOGIN is timed apart from the rest ("work": SELECT and
the two FETCHes), and Dovecot's password is hashed at the same cost as ours (issue 18): a
SHA512-CRYPT hash (Dovecot 2.3 has no scrypt) whose rounds are calibrated so one check takes
as long as one check of sitemail's scrypt hash on this machine. Target (issue 18): work within
1.5x of Dovecot warm.

Bounded (fixed counts, every wait has a timeout), loopback only (127.10.70.61 and .62),
everything stopped and removed on the way out. Run as root (Dovecot drops privileges to the
`mail` user) from the repository root:

    .venv/bin/python bench/imap.py                    # 10,000 messages, 3 warm runs
    .venv/bin/python bench/imap.py --messages 2000 --runs 5 --json
"""

from __future__ import annotations

import argparse
import contextlib
import crypt
import imaplib
import json
import os
import random
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sitemail.admin.service import AdminService
from sitemail.directory import ObjectKind
from sitemail.directory.passwords import hash_password, verify_password
from sitemail.mailbox import Append, append_messages

SITEMAIL_IP, DOVECOT_IP = "127.10.70.61", "127.10.70.62"
IMAPS_PORT = 9993
USER, PASSWORD = "bench", "bench password 1"
PHASES = ("login", "select", "headers", "bodies")
WORK = ("select", "headers", "bodies")  # everything but LOGIN


class BenchError(Exception):
    pass


def wait_until(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out waiting for {what}")
        time.sleep(0.1)


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def make_messages(count: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    words = ["alpha", "budget", "quarterly", "meeting", "notes", "draft", "site", "replica"]
    out = []
    for i in range(count):
        body_lines = [" ".join(rng.choices(words, k=12)) for _ in range(rng.randint(10, 80))]
        out.append(
            (
                f"Return-Path: <sender{i % 50}@outside.test>\r\n"
                f"Received: from mx.outside.test ([192.0.2.{i % 250}])\r\n"
                f"\tby servera.sitea.example.com with ESMTPS id Q{i:08d}; "
                f"Thu, 3 Dec 2026 10:{i // 600 % 60:02d}:{i % 60:02d} +0000\r\n"
                f"From: Sender {i % 50} <sender{i % 50}@outside.test>\r\n"
                f"To: Bench User <{USER}@sitea.example.com>\r\n"
                f"Subject: {rng.choice(words)} {rng.choice(words)} number {i}\r\n"
                f"Date: Thu, 3 Dec 2026 10:{i // 600 % 60:02d}:{i % 60:02d} +0000\r\n"
                f"Message-ID: <{i}.bench@outside.test>\r\n"
                "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                + "\r\n".join(body_lines)
                + "\r\n"
            ).encode()
        )
    return out


# -- sitemail ---------------------------------------------------------------------------------


def set_up_sitemail(root: Path, messages: list[bytes]) -> Path:
    data_dir = root / "SiteA"
    service = AdminService.init(
        data_dir,
        org="BenchORG",
        site="SiteA",
        server="ServerA",
        domain="sitea.example.com",
        listen=[SITEMAIL_IP],
    )
    try:
        mailbox = service.add_recipient(
            ObjectKind.MAILBOX, USER, display_name="Bench User", password=PASSWORD
        )
        now = time.time()
        with service.store.write() as conn:
            append_messages(conn, [Append(mailbox.guid, m) for m in messages], now=now)
    finally:
        service.close()
    path = data_dir / "sitemail.toml"
    text = path.read_text(encoding="utf-8")
    text = text.replace("\n[smtp]\n", "\n[smtp]\nport = 2525\n", 1)
    text = text.replace("\n[imap]\n", f"\n[imap]\nport = 0\ntls_port = {IMAPS_PORT}\n", 1)
    text = text.replace("\n[pop3]\n", "\n[pop3]\nport = 0\ntls_port = 0\n", 1)
    text = text.replace("\n[submission]\n", "\n[submission]\nport = 0\ntls_port = 0\n", 1)
    path.write_text(text, encoding="utf-8")
    return data_dir


@contextlib.contextmanager
def running(command: list[str], host: str, what: str, log: Path) -> Iterator[int]:
    """Run a server process until the block ends; wait until its IMAPS port answers; the
    block gets the process id."""
    if answers(host, IMAPS_PORT):
        raise BenchError(f"something already listens on {host}:{IMAPS_PORT}")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(lambda: answers(host, IMAPS_PORT), timeout=60, what=what)
        yield proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def sitemail_serving(data_dir: Path) -> contextlib.AbstractContextManager[int]:
    script = Path(sys.executable).parent / "sitemail"
    command = [str(script), "serve", "--allow-root", "--data-dir", str(data_dir)]
    return running(command, SITEMAIL_IP, "sitemail's IMAP", data_dir / "serve.log")


# -- Dovecot ----------------------------------------------------------------------------------


def _seconds(check: Callable[[], object], times: int = 3) -> float:
    spent = []
    for _ in range(times):
        start = time.perf_counter()
        check()
        spent.append(time.perf_counter() - start)
    return statistics.median(spent)


def same_cost_hash(password: str) -> str:
    """Dovecot's SHA512-CRYPT hash of the password, its rounds set so that checking it costs
    what checking sitemail's scrypt hash costs here (both measured in this process)."""
    ours = hash_password(password)
    target = _seconds(lambda: verify_password(password, ours))
    probe = 20_000
    per_round = (
        _seconds(lambda: crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512, rounds=probe)))
        / probe
    )
    rounds = max(1_000, min(999_999_999, round(target / per_round)))
    print(
        f"password hashes: sitemail scrypt {target * 1000:.0f} ms; Dovecot SHA512-CRYPT rounds={rounds}"
    )
    return "{SHA512-CRYPT}" + crypt.crypt(
        password, crypt.mksalt(crypt.METHOD_SHA512, rounds=rounds)
    )


def set_up_dovecot(root: Path, messages: list[bytes], cert: Path, key: Path) -> Path:
    if shutil.which("dovecot") is None:
        raise BenchError("dovecot is not installed: apt-get install dovecot-imapd")
    base = root / "dovecot"
    home = base / "home" / USER
    for sub in ("new", "cur", "tmp"):
        (home / "Maildir" / sub).mkdir(parents=True, exist_ok=True)
    stamp = int(time.time())
    for i, content in enumerate(messages):
        (home / "Maildir" / "cur" / f"{stamp}.M{i}P1.bench,S={len(content)}:2,").write_bytes(
            content
        )
    (base / "users").write_text(f"{USER}:{same_cost_hash(PASSWORD)}::::::\n")
    for sub in ("run", "state"):
        (base / sub).mkdir()
    conf = base / "dovecot.conf"
    conf.write_text(
        f"""protocols = imap
listen = {DOVECOT_IP}
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = yes
auth_mechanisms = plain
first_valid_uid = 8
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = username_format=%u {base}/users
}}
userdb {{
  driver = static
  args = uid=mail gid=mail home={base}/home/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {IMAPS_PORT}
    ssl = yes
  }}
}}
"""
    )
    subprocess.run(["chown", "-R", "mail:mail", str(base / "home")], check=True)
    for path in (base, base / "users", conf, base / "run", base / "state"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return conf


def dovecot_serving(conf: Path) -> contextlib.AbstractContextManager[int]:
    command = ["dovecot", "-F", "-c", str(conf)]
    return running(command, DOVECOT_IP, "Dovecot's IMAP", conf.parent / "stdout.log")


# -- the client -------------------------------------------------------------------------------


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) used so far by a server: the process `root`, every live
    descendant, and the children they reaped (Dovecot's per-session processes end at LOGOUT).
    Unlike wall time, this hardly depends on what else the machine is running."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    used: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        used[pid] = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(used.get(pid, 0) for pid in tree) / ticks


def session(host: str, count: int, bodies: int, server: int) -> dict[str, float]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    times: dict[str, float] = {}
    start = time.perf_counter()
    client = imaplib.IMAP4_SSL(host, IMAPS_PORT, ssl_context=context, timeout=120)
    try:
        client.login(USER, PASSWORD)
        times["login"] = time.perf_counter() - start
        cpu_after_login = tree_cpu(server)
        mark = time.perf_counter()
        typ, data = client.select("INBOX")
        if typ != "OK" or int(data[0] or 0) != count:
            raise BenchError(f"{host}: SELECT gave {typ} {data}, expected {count} messages")
        times["select"] = time.perf_counter() - mark
        mark = time.perf_counter()
        typ, fetched = client.fetch(f"1:{count}", "(BODY.PEEK[HEADER])")
        if typ != "OK" or sum(1 for item in fetched if isinstance(item, tuple)) != count:
            raise BenchError(f"{host}: header FETCH incomplete")
        times["headers"] = time.perf_counter() - mark
        mark = time.perf_counter()
        typ, fetched = client.fetch(f"1:{bodies}", "(BODY.PEEK[])")
        if typ != "OK" or sum(1 for item in fetched if isinstance(item, tuple)) != bodies:
            raise BenchError(f"{host}: body FETCH incomplete")
        times["bodies"] = time.perf_counter() - mark
        client.logout()
    finally:
        with contextlib.suppress(Exception):
            client.shutdown()
    time.sleep(0.2)  # Dovecot's session process ends after LOGOUT: let it be reaped
    times["work"] = sum(times[p] for p in WORK)
    times["work cpu"] = tree_cpu(server) - cpu_after_login
    return times


def measure(count: int, bodies: int, runs: int, pids: dict[str, int]) -> dict[str, Any]:
    """Both servers, their warm sessions interleaved (sitemail, Dovecot, sitemail, ...) so a
    change of the machine's load falls on both alike; each round's ratio is kept."""
    hosts = {"sitemail": SITEMAIL_IP, "dovecot": DOVECOT_IP}
    first = {name: session(host, count, bodies, pids[name]) for name, host in hosts.items()}
    rounds: list[dict[str, dict[str, float]]] = []
    for _ in range(runs):
        rounds.append(
            {name: session(host, count, bodies, pids[name]) for name, host in hosts.items()}
        )
    results: dict[str, Any] = {}
    for name in hosts:
        warm = [r[name] for r in rounds]
        median = {key: statistics.median(run[key] for run in warm) for key in first[name]}
        results[name] = {"first": first[name], "warm": median}
    results["round_ratios"] = {
        key: [r["sitemail"][key] / r["dovecot"][key] for r in rounds]
        for key in ("work", "login", "work cpu")
    }
    return results


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"imaplib over TLS, {args.messages} messages: LOGIN, SELECT, FETCH 1:{args.messages} "
        f"headers, FETCH 1:{args.bodies} whole (seconds; warm = median of {args.runs} runs)"
    )
    print(f"{'':16}{'sitemail':>10}{'dovecot':>10}{'ratio':>8}")
    for state in ("first", "warm"):
        for key in (*PHASES, "work", "work cpu"):
            ours = results["sitemail"][state][key]
            theirs = results["dovecot"][state][key]
            ratio = ours / theirs if theirs else float("inf")
            print(f"{state + ' ' + key:16}{ours:10.3f}{theirs:10.3f}{ratio:8.2f}")
    ratios = results["round_ratios"]
    ratio, login = statistics.median(ratios["work"]), statistics.median(ratios["login"])
    print(f"\nwork ratio of each warm round: {', '.join(f'{r:.2f}' for r in ratios['work'])}")
    print(f"warm work (no LOGIN): sitemail is {ratio:.2f}x Dovecot (median of rounds; target 1.5x)")
    print(f"warm LOGIN (same hash cost): sitemail is {login:.2f}x Dovecot (median of rounds)")
    cpu = statistics.median(ratios["work cpu"])
    print(
        f"server CPU for the work (every process of each server): sitemail uses {cpu:.2f}x "
        "Dovecot's (median of rounds)"
    )
    print(
        f"machine load (1, 5, 15 min) at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )
    print(
        f"reproduce: .venv/bin/python bench/imap.py --messages {args.messages} --runs {args.runs}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--bodies", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if not 0 < args.bodies <= args.messages or args.runs < 1:
        parser.error("need 0 < --bodies <= --messages and --runs >= 1")
    messages = make_messages(args.messages)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-imap-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)
        data_dir = set_up_sitemail(root, messages)
        cert, key = data_dir / "tls" / "cert.pem", data_dir / "tls" / "key.pem"
        shared = root / "tls"
        shared.mkdir()
        shutil.copy(cert, shared / "cert.pem")
        shutil.copy(key, shared / "key.pem")
        os.chmod(shared / "key.pem", 0o644)  # Dovecot reads it as root before dropping
        conf = set_up_dovecot(root, messages, shared / "cert.pem", shared / "key.pem")
        with sitemail_serving(data_dir) as ours, dovecot_serving(conf) as theirs:
            results = measure(
                args.messages, args.bodies, args.runs, {"sitemail": ours, "dovecot": theirs}
            )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        report(results, args)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench/imap.py: {exc}", file=sys.stderr)
        sys.exit(1)
