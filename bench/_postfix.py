"""The Postfix side of the sitemail benchmark: private Postfix instances and load generators.

Stdlib only.  Everything here talks to loopback addresses only (127.0.0.0/8 or ::1, given as
IP literals, never host names, so nothing is ever resolved through DNS).

* :func:`ensure_postfix_installed` installs Debian's ``postfix`` package (which ships
  ``smtp-source``) when missing, without leaving the system instance running.
* :class:`PrivatePostfix` runs a throw-away Postfix instance in a temporary directory, with its
  own ``config_directory``, ``queue_directory`` and ``data_directory``, listening on one loopback
  address and port, either discarding every message (``mode="discard"``) or delivering into
  Maildirs (``mode="maildir"``).
* :func:`run_smtp_source` drives Postfix's own load generator and reports messages per second.
* :func:`measure_latency` is a pure-asyncio SMTP client that times each message from the end of
  DATA (the final ``.``) to the server's reply, and reports p50/p99.

Typical use::

    ensure_postfix_installed()
    with PrivatePostfix(ip="127.0.0.77", port=2525, mode="discard") as pf:
        res = run_smtp_source(pf.ip, pf.port, messages=5000, concurrency=10, size_bytes=4096,
                              recipient="bench@bench.test", sender="loadgen@sender.test")
        print(res.msgs_per_s)
        pf.wait_queue_empty(timeout=120)
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import pwd
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

__all__ = [
    "DEFAULT_DOMAIN",
    "LatencyResult",
    "Mode",
    "PostfixError",
    "PrivatePostfix",
    "SourceResult",
    "ensure_postfix_installed",
    "find_smtp_source",
    "measure_latency",
    "measure_latency_async",
    "run_smtp_source",
]

POSTFIX_BIN = Path("/usr/sbin/postfix")
POSTCONF_BIN = Path("/usr/sbin/postconf")
SMTP_SOURCE_CANDIDATES = (Path("/usr/sbin/smtp-source"), Path("/usr/bin/smtp-source"))
SYSTEM_QUEUE_DIR = Path("/var/spool/postfix")
DEFAULT_DOMAIN = "bench.test"

#: Debconf answer that makes the package install without any configuration (and so without a
#: main.cf for the system instance, which then cannot be started by accident).
_DEBCONF_PRESEED = (
    "postfix postfix/main_mailer_type select No configuration\n"
    "postfix postfix/mailname string bench.localhost\n"
)

#: Queue subdirectories that hold messages not yet delivered, in the order messages flow through
#: them (scanning in flow order never misses a file that moves forward during the scan).
_QUEUE_SUBDIRS = ("maildrop", "incoming", "active", "deferred", "hold")

Mode = Literal["discard", "maildir"]


class PostfixError(RuntimeError):
    """A private Postfix instance could not be installed, started or stopped."""


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _require_loopback(host: str) -> str:
    """Return ``host`` if it is a loopback IP literal; raise ValueError otherwise.

    Host names are refused on purpose: resolving them could send a DNS query off this machine.
    """
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP literal; only loopback IPs are allowed") from None
    if not addr.is_loopback:
        raise ValueError(f"{host} is not a loopback address; benchmarks stay on 127.0.0.0/8")
    return str(addr)


def _hostport(host: str, port: int) -> str:
    """``host:port`` in the syntax Postfix tools accept (IPv6 in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def find_smtp_source() -> Path | None:
    """Path of Postfix's ``smtp-source`` load generator, or None when it is not installed."""
    for candidate in SMTP_SOURCE_CANDIDATES:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("smtp-source")
    return Path(found) if found else None


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie.

    Daemons whose master died are re-parented to pid 1, which on some sandboxes never reaps
    them: they stay as zombies that ``kill(pid, 0)`` still reports as existing.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    state = stat[stat.rfind(")") + 2 : stat.rfind(")") + 3]
    return state not in ("Z", "X")


def _read_pid_file(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def _proc_environ(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


def _proc_ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces or ')'.
    rest = stat[stat.rfind(")") + 2 :].split()
    return int(rest[1]) if len(rest) > 1 and rest[1].isdigit() else None


def _run(
    cmd: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: PLW1510 - callers check returncode themselves
        list(cmd), capture_output=True, text=True, timeout=timeout, env=env, input=input_text
    )


def _run_tty(cmd: Sequence[str], *, timeout: float) -> tuple[int, str]:
    """Run a Postfix command with its output on a pseudo-terminal; return (status, output).

    Postfix commands print their warnings and fatal errors on stderr only when stderr is a
    terminal (otherwise they go to syslog or maillog_file, which may not be up yet), so a plain
    pipe sees nothing at all when, say, ``postfix check`` fails.
    """
    master_fd, slave_fd = os.openpty()
    try:
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=slave_fd,
            stderr=slave_fd,
            start_new_session=True,
        )
    finally:
        os.close(slave_fd)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            # A daemon started by the command may keep the terminal open: stop reading once
            # the command itself has exited and the terminal has been quiet briefly.
            exited = proc.poll() is not None
            ready, _, _ = select.select([master_fd], [], [], 0.1 if exited else 0.05)
            if ready:
                try:
                    data = os.read(master_fd, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    data = b""
                if data:
                    chunks.append(data)
                    continue
                if exited:
                    break
                time.sleep(0.02)
            elif exited:
                break
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise subprocess.TimeoutExpired(list(cmd), timeout)
    finally:
        os.close(master_fd)
    status = proc.wait()
    text = b"".join(chunks).decode("utf-8", errors="replace").replace("\r\n", "\n")
    return status, text


# --------------------------------------------------------------------------------------------
# installation
# --------------------------------------------------------------------------------------------


def _stop_system_postfix() -> None:
    """Stop the package's own instance (config /etc/postfix) if something started it."""
    pid = _read_pid_file(SYSTEM_QUEUE_DIR / "pid" / "master.pid")
    if pid is None or not _pid_alive(pid):
        return
    if Path("/etc/postfix/main.cf").exists():
        _run([str(POSTFIX_BIN), "stop"], timeout=60)
    deadline = time.monotonic() + 15
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        time.sleep(1)
    if _pid_alive(pid):
        raise PostfixError(f"the system Postfix master (pid {pid}) would not stop")


def ensure_postfix_installed() -> None:
    """Install Debian's ``postfix`` package when ``postfix`` or ``smtp-source`` is missing.

    Idempotent: does nothing when both are present.  The install is preseeded to "No
    configuration", so it neither prompts nor writes a main.cf for the system instance; if the
    package's scripts started the system instance anyway it is stopped again.  Needs root.
    """
    if POSTFIX_BIN.exists() and find_smtp_source() is not None:
        return
    if os.geteuid() != 0:
        raise PostfixError("postfix is not installed and installing it needs root")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", DEBCONF_NONINTERACTIVE_SEEN="true")
    steps: list[tuple[list[str], str | None]] = [
        (["debconf-set-selections"], _DEBCONF_PRESEED),
        (["apt-get", "update"], None),
        (["apt-get", "install", "-y", "--no-install-recommends", "postfix"], None),
    ]
    for cmd, stdin in steps:
        proc = _run(cmd, timeout=900, env=env, input_text=stdin)
        if proc.returncode != 0:
            raise PostfixError(
                f"{' '.join(cmd)} failed with exit code {proc.returncode}:\n"
                f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
            )
    _stop_system_postfix()
    if not POSTFIX_BIN.exists() or find_smtp_source() is None:
        raise PostfixError("postfix installed but postfix or smtp-source is still missing")


# --------------------------------------------------------------------------------------------
# private instance
# --------------------------------------------------------------------------------------------

# service type private unpriv chroot wakeup maxproc command.  chroot is off everywhere: the
# instance lives in a temporary directory without the files a chroot jail would need.
_MASTER_CF_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

_LOCALPART_RE = r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}"


class PrivatePostfix:
    """A private, throw-away Postfix instance on one loopback address and port.

    Use it as a context manager (``with PrivatePostfix(...) as pf:``) or call :meth:`start` and
    :meth:`stop`.  Everything lives under :attr:`root` (a fresh temporary directory unless
    ``workdir`` is given), which is removed on stop unless ``keep=True``:

    * ``conf/``  main.cf, master.cf (and the Maildir map): ``config_directory``
    * ``queue/`` ``queue_directory`` (Postfix's durable queue, fsync'd as by default)
    * ``data/``  ``data_directory``
    * ``mail/``  ``virtual_mailbox_base`` (mode "maildir": ``mail/<domain>/<user>/new/...``)
    * ``log/postfix.log`` ``maillog_file`` written by postlogd, so no syslog is needed

    ``mode="discard"`` accepts mail for any domain from 127.0.0.0/8 and hands every message to
    the discard transport (after queueing it durably, as Postfix always does).
    ``mode="maildir"`` delivers mail for ``domain`` into Maildirs owned by ``mailbox_user``
    (default ``nobody``): with ``mailbox_users=None`` (the default) any local part made of
    letters, digits and ``._+-`` is accepted and every message lands in the one Maildir
    ``mail/<domain>/catchall/`` (virtual(8) forbids ``$1`` substitution in regexp maps, so a
    catch-all cannot fan out per user); with ``mailbox_users=["a", "b"]`` exactly those users
    are accepted, each into ``mail/<domain>/<user>/`` (a ``texthash:`` map, no postmap needed).
    Other domains go to the error transport (never the network).

    ``extra_main_cf`` overrides or adds main.cf parameters (e.g. ``{"in_flow_delay": "0"}``).
    """

    def __init__(
        self,
        *,
        ip: str = "127.0.0.77",
        port: int = 2525,
        mode: Mode = "discard",
        domain: str = DEFAULT_DOMAIN,
        workdir: Path | None = None,
        keep: bool = False,
        mailbox_user: str = "nobody",
        mailbox_users: Sequence[str] | None = None,
        extra_main_cf: Mapping[str, str] | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 30.0,
    ) -> None:
        if mode not in ("discard", "maildir"):
            raise ValueError(f"unknown mode {mode!r}")
        if not 0 < port < 65536:
            raise ValueError(f"bad port {port}")
        if not re.fullmatch(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+", domain):
            raise ValueError(f"bad domain {domain!r}")
        self.ip = _require_loopback(ip)
        self.port = port
        self.mode: Mode = mode
        self.domain = domain.lower()
        self.keep = keep
        self.mailbox_user = mailbox_user
        self.mailbox_users = tuple(mailbox_users) if mailbox_users is not None else None
        for user in self.mailbox_users or ():
            if not re.fullmatch(_LOCALPART_RE, user):
                raise ValueError(f"bad mailbox user {user!r}")
        self.extra_main_cf = dict(extra_main_cf or {})
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._workdir = workdir
        self._root: Path | None = None
        self._master_pid: int | None = None
        self._owns_root = False

    # -- paths ---------------------------------------------------------------------------

    @property
    def root(self) -> Path:
        """The instance's top directory (only valid once started)."""
        if self._root is None:
            raise PostfixError("instance not started")
        return self._root

    @property
    def config_dir(self) -> Path:
        return self.root / "conf"

    @property
    def queue_dir(self) -> Path:
        return self.root / "queue"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def mail_dir(self) -> Path:
        """``virtual_mailbox_base`` (mode "maildir")."""
        return self.root / "mail"

    @property
    def log_file(self) -> Path:
        return self.root / "log" / "postfix.log"

    @property
    def master_pid(self) -> int | None:
        return self._master_pid

    @property
    def address(self) -> tuple[str, int]:
        return (self.ip, self.port)

    # -- configuration -------------------------------------------------------------------

    def _main_cf(self) -> dict[str, str]:
        mailbox = pwd.getpwnam(self.mailbox_user)
        cf: dict[str, str] = {
            "compatibility_level": "3.6",
            "config_directory": str(self.config_dir),
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "syslog_name": f"postfix-bench-{self.port}",
            "maillog_file": str(self.log_file),
            "maillog_file_prefixes": str(self.root / "log"),
            "myhostname": "postfix-bench.localhost",
            "mydomain": "localhost",
            "myorigin": "$myhostname",
            "mydestination": "",
            "relay_domains": "",
            # Postfix accepts only addresses configured on an interface here, and lo carries
            # just 127.0.0.1; the smtpd service in master.cf binds the exact IP:port instead.
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv6" if ":" in self.ip else "ipv4",
            "mynetworks": "[::1]/128" if ":" in self.ip else "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtpd_recipient_restrictions": "permit_mynetworks, reject",
            # No DNS, ever: the resolver here is not on loopback.
            "smtpd_peername_lookup": "no",
            "smtp_dns_support_level": "disabled",
            "lmtp_dns_support_level": "disabled",
            "biff": "no",
            "append_dot_mydomain": "no",
            "readme_directory": "no",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "smtpd_banner": "$myhostname ESMTP",
        }
        if self.mode == "discard":
            route = "discard:bench"
            cf.update(
                default_transport=route,
                relay_transport=route,
                local_transport=route,
                virtual_transport=route,
            )
        else:
            cf.update(
                default_transport="error:no outbound mail from the benchmark instance",
                relay_transport="error:no outbound mail from the benchmark instance",
                local_transport="error:no local delivery in the benchmark instance",
                virtual_mailbox_domains=self.domain,
                virtual_mailbox_base=str(self.mail_dir),
                virtual_mailbox_maps=self._mailbox_map(),
                virtual_uid_maps=f"static:{mailbox.pw_uid}",
                virtual_gid_maps=f"static:{mailbox.pw_gid}",
                virtual_minimum_uid=str(min(100, mailbox.pw_uid)),
            )
        cf.update(self.extra_main_cf)
        return cf

    def _mailbox_map(self) -> str:
        if self.mailbox_users is None:
            return f"regexp:{self.config_dir / 'vmailbox.regexp'}"
        return f"texthash:{self.config_dir / 'vmailbox.texthash'}"

    def _master_cf(self) -> str:
        listen = _hostport(self.ip, self.port)
        return f"{listen} inet n - n - - smtpd\n" + _MASTER_CF_SERVICES

    def _write_config(self) -> None:
        root = self.root
        for sub in ("conf", "queue", "data", "log", "mail"):
            (root / sub).mkdir(mode=0o755, exist_ok=True)
        root.chmod(0o755)  # mkdtemp makes it 0700; the postfix user must traverse it
        postfix_user = pwd.getpwnam("postfix")
        os.chown(self.data_dir, postfix_user.pw_uid, postfix_user.pw_gid)
        self.data_dir.chmod(0o700)
        main_cf = "".join(f"{k} = {v}\n" for k, v in self._main_cf().items())
        (self.config_dir / "main.cf").write_text(main_cf, encoding="ascii")
        (self.config_dir / "master.cf").write_text(self._master_cf(), encoding="ascii")
        if self.mode == "maildir":
            mailbox = pwd.getpwnam(self.mailbox_user)
            os.chown(self.mail_dir, mailbox.pw_uid, mailbox.pw_gid)
            if self.mailbox_users is None:
                escaped = re.escape(self.domain)
                (self.config_dir / "vmailbox.regexp").write_text(
                    f"/^{_LOCALPART_RE}@{escaped}$/ {self.domain}/catchall/\n", encoding="ascii"
                )
            else:
                (self.config_dir / "vmailbox.texthash").write_text(
                    "".join(
                        f"{user}@{self.domain} {self.domain}/{user}/\n"
                        for user in self.mailbox_users
                    ),
                    encoding="ascii",
                )

    def _postfix(self, *args: str, timeout: float = 60.0) -> tuple[int, str]:
        return _run_tty([str(POSTFIX_BIN), "-c", str(self.config_dir), *args], timeout=timeout)

    def postconf(self, name: str) -> str:
        """The effective value of one main.cf parameter of this instance."""
        proc = _run([str(POSTCONF_BIN), "-c", str(self.config_dir), "-h", name], timeout=30)
        if proc.returncode != 0:
            raise PostfixError(f"postconf {name} failed: {proc.stderr.strip()}")
        return proc.stdout.strip()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Write the configuration, start the instance and wait for its SMTP greeting."""
        if self._master_pid is not None:
            raise PostfixError("instance already started")
        if not POSTFIX_BIN.exists():
            raise PostfixError("postfix is not installed (call ensure_postfix_installed())")
        if _port_answers(self.ip, self.port):
            raise PostfixError(f"something already listens on {_hostport(self.ip, self.port)}")
        if self._workdir is None:
            self._root = Path(tempfile.mkdtemp(prefix=f"postfix-bench-{self.port}-"))
            self._owns_root = True
        else:
            self._workdir.mkdir(parents=True, exist_ok=True)
            self._root = self._workdir.resolve()
        try:
            self._write_config()
            self._postfix_ok("check")  # also creates the queue subdirectories
            self._postfix_ok("start")
            self._master_pid = self._wait_master_pid()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _postfix_ok(self, command: str) -> None:
        status, out = self._postfix(command)
        if status != 0:
            raise PostfixError(f"postfix {command} failed ({status}):\n{out}{self.log_tail()}")

    def _wait_master_pid(self) -> int:
        deadline = time.monotonic() + self.start_timeout
        pid_file = self.queue_dir / "pid" / "master.pid"
        while time.monotonic() < deadline:
            pid = _read_pid_file(pid_file)
            if pid is not None and _pid_alive(pid):
                return pid
            time.sleep(0.05)
        raise PostfixError(f"master.pid did not appear in time\n{self.log_tail()}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if _port_answers(self.ip, self.port, expect_banner=True):
                return
            if self._master_pid is not None and not _pid_alive(self._master_pid):
                break
            time.sleep(0.05)
        raise PostfixError(
            f"no SMTP greeting on {_hostport(self.ip, self.port)} in time\n{self.log_tail()}"
        )

    def _instance_pids(self) -> set[int]:
        """Pids of this instance: its master and the master's children (postfix daemons).

        A pid counts only if its environment names this instance's config directory, so a
        recycled pid of an unrelated process is never included.
        """
        master = self._master_pid
        if master is None:
            return set()
        marker = f"MAIL_CONFIG={self.config_dir}".encode()
        pids: set[int] = set()
        if marker in _proc_environ(master):
            pids.add(master)
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                pid = int(entry.name)
                if _proc_ppid(pid) == master and marker in _proc_environ(pid):
                    pids.add(pid)
        return pids

    def stop(self) -> None:
        """Stop the instance (``postfix -c CONF stop``), kill its leftovers, remove its files."""
        try:
            if self._master_pid is not None:
                pids = self._instance_pids()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._postfix("stop", timeout=self.stop_timeout)
                deadline = time.monotonic() + self.stop_timeout
                while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
                    time.sleep(0.05)
                pids |= self._instance_pids()
                for sig in (signal.SIGTERM, signal.SIGKILL):
                    alive = [p for p in pids if _pid_alive(p)]
                    for pid in alive:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, sig)
                    if alive:
                        time.sleep(0.5)
                self._master_pid = None
        finally:
            if self._root is not None and self._owns_root and not self.keep:
                shutil.rmtree(self._root, ignore_errors=True)
                self._root = None
                self._owns_root = False

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- observation ---------------------------------------------------------------------

    def log_tail(self, max_chars: int = 4000) -> str:
        """The end of this instance's maillog_file (empty when none yet)."""
        if self._root is None:
            return ""
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")[-max_chars:]
        except OSError:
            return ""

    def queue_size(self) -> int:
        """Number of messages in the queue (maildrop, incoming, active, deferred, hold)."""
        return sum(_count_files(self.queue_dir / sub) for sub in _QUEUE_SUBDIRS)

    def wait_queue_empty(self, *, timeout: float = 300.0, poll: float = 0.02) -> float:
        """Block until the queue is empty (seen twice in a row); return the seconds waited."""
        start = time.perf_counter()
        deadline = start + timeout
        zero_seen = False
        while True:
            if self.queue_size() == 0:
                if zero_seen:
                    return time.perf_counter() - start
                zero_seen = True
            else:
                zero_seen = False
            if time.perf_counter() > deadline:
                raise TimeoutError(f"queue still holds {self.queue_size()} messages")
            time.sleep(poll)

    def delivered_count(self) -> int:
        """Number of messages delivered into Maildirs (files in every ``new/`` and ``cur/``)."""
        if self._root is None or not self.mail_dir.is_dir():
            return 0
        total = 0
        for domain in _scandirs(self.mail_dir):
            for user in _scandirs(Path(domain)):
                for sub in ("new", "cur"):
                    total += _count_files(Path(user) / sub, recursive=False)
        return total

    def wait_delivered(self, count: int, *, timeout: float = 300.0, poll: float = 0.02) -> float:
        """Block until at least ``count`` messages sit in Maildirs; return the seconds waited."""
        start = time.perf_counter()
        deadline = start + timeout
        while self.delivered_count() < count:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"only {self.delivered_count()} of {count} delivered")
            time.sleep(poll)
        return time.perf_counter() - start

    def clear_mailboxes(self) -> None:
        """Remove delivered messages (keeps the Maildir directories themselves)."""
        if self._root is None or not self.mail_dir.is_dir():
            return
        for domain in _scandirs(self.mail_dir):
            for user in _scandirs(Path(domain)):
                for sub in ("new", "cur"):
                    with contextlib.suppress(FileNotFoundError):
                        for entry in os.scandir(Path(user) / sub):
                            with contextlib.suppress(FileNotFoundError):
                                os.unlink(entry.path)


def _scandirs(path: Path) -> Iterator[str]:
    with contextlib.suppress(FileNotFoundError), os.scandir(path) as it:
        yield from [e.path for e in it if e.is_dir(follow_symlinks=False)]


def _count_files(path: Path, *, recursive: bool = True) -> int:
    total = 0
    try:
        with os.scandir(path) as it:
            entries = list(it)
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                if recursive:
                    total += _count_files(Path(entry.path))
            else:
                total += 1
        except FileNotFoundError:
            continue
    return total


def _port_answers(ip: str, port: int, *, expect_banner: bool = False) -> bool:
    """True when ``ip:port`` accepts a TCP connection (and, if asked, greets with 220)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            sock.connect((ip, port))
            if not expect_banner:
                return True
            banner = sock.recv(512)
            with contextlib.suppress(OSError):
                sock.sendall(b"QUIT\r\n")
                sock.recv(512)
            return banner.startswith(b"220")
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# smtp-source
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceResult:
    """Outcome of one :func:`run_smtp_source` run."""

    messages: int
    concurrency: int
    size_bytes: int
    elapsed_s: float
    returncode: int
    command: tuple[str, ...]
    output: str = field(repr=False)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.elapsed_s if self.elapsed_s > 0 else 0.0


def run_smtp_source(
    host: str,
    port: int,
    *,
    messages: int,
    concurrency: int,
    size_bytes: int,
    recipient: str,
    sender: str,
    reuse_connections: bool = True,
    recipients: int = 1,
    distinct_recipients: bool = False,
    helo: str = "loadgen.localhost",
    show_counter: bool = False,
    timeout: float = 600.0,
    check: bool = True,
) -> SourceResult:
    """Send ``messages`` messages with Postfix's ``smtp-source`` and time the whole run.

    ``size_bytes`` is the body length (``-l``; smtp-source adds a few header lines of its own).
    ``reuse_connections`` passes ``-d`` (each of the ``concurrency`` sessions sends message after
    message over one connection, RSET-free); without it every message opens a new connection.
    ``recipients`` is the count per message (``-r``); ``distinct_recipients`` passes ``-N``:
    smtp-source then prepends a sequence number to every recipient of the run (``1bench@``,
    ``2bench@``, ... up to messages x recipients), so no two RCPTs name the same address.
    ``show_counter`` passes ``-c`` and lets the counter go to this process's stdout.
    Raises PostfixError if smtp-source fails and ``check`` is true.
    """
    host = _require_loopback(host)
    if messages < 1 or concurrency < 1 or size_bytes < 0:
        raise ValueError("messages and concurrency must be >= 1, size_bytes >= 0")
    binary = find_smtp_source()
    if binary is None:
        raise PostfixError("smtp-source not found (call ensure_postfix_installed())")
    cmd = [
        str(binary),
        "-s", str(concurrency),
        "-m", str(messages),
        "-l", str(size_bytes),
        "-f", sender,
        "-t", recipient,
        "-M", helo,
        "-S", "sitemail benchmark",
        "-6" if ":" in host else "-4",
    ]  # fmt: skip
    if reuse_connections:
        cmd.append("-d")
    if recipients != 1:
        cmd += ["-r", str(recipients)]
    if distinct_recipients:
        cmd.append("-N")
    if show_counter:
        cmd.append("-c")
    cmd.append(_hostport(host, port))
    start = time.perf_counter()
    proc = subprocess.run(  # noqa: PLW1510 - checked below
        cmd,
        stdout=None if show_counter else subprocess.PIPE,
        stderr=subprocess.STDOUT if not show_counter else subprocess.PIPE,
        text=True,
        timeout=timeout,
    )
    elapsed = time.perf_counter() - start
    output = (proc.stdout or "") + (proc.stderr or "")
    result = SourceResult(
        messages=messages,
        concurrency=concurrency,
        size_bytes=size_bytes,
        elapsed_s=elapsed,
        returncode=proc.returncode,
        command=tuple(cmd),
        output=output,
    )
    if check and proc.returncode != 0:
        raise PostfixError(f"smtp-source exited {proc.returncode}: {output[-2000:]}")
    return result


# --------------------------------------------------------------------------------------------
# asyncio latency client
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyResult:
    """Per-message acceptance latency: end of DATA (the final ``.``) to the server's reply."""

    messages: int  # messages accepted (2xx after the final dot)
    errors: int  # messages rejected or lost to a protocol/connection error
    concurrency: int
    size_bytes: int
    elapsed_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    samples_s: tuple[float, ...] = field(repr=False)

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Linear-interpolation percentile of already-sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = (len(sorted_values) - 1) * pct / 100.0
    low = int(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


class _SmtpReplyError(Exception):
    def __init__(self, stage: str, code: int, text: str) -> None:
        super().__init__(f"{stage}: {code} {text}")
        self.code = code


async def _read_reply(reader: asyncio.StreamReader) -> tuple[int, str]:
    lines: list[str] = []
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        text = line.decode("utf-8", errors="replace").rstrip("\r\n")
        lines.append(text)
        if len(text) < 4 or text[3] != "-":
            break
    code = int(lines[-1][:3]) if lines[-1][:3].isdigit() else 0
    return code, "\n".join(lines)


async def _expect_reply(reader: asyncio.StreamReader, stage: str, expect: int) -> None:
    code, text = await _read_reply(reader)
    if code // 100 != expect // 100:
        raise _SmtpReplyError(stage, code, text)


async def _command(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    line: str,
    expect: int,
) -> None:
    writer.write(line.encode("ascii") + b"\r\n")
    await writer.drain()
    await _expect_reply(reader, line.split(" ", 1)[0], expect)


def _body(size_bytes: int) -> bytes:
    """``size_bytes`` of body made of 78-byte lines (76 letters + CRLF), no leading dots."""
    line = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmn\r\n"
    full, rest = divmod(size_bytes, len(line))
    body = line * full
    if rest:
        body += b"x" * max(rest - 2, 1) + b"\r\n" if rest > 2 else b"\r\n"
    return body


@dataclass
class _LatencyState:
    remaining: int
    samples: list[float] = field(default_factory=list)
    errors: int = 0


async def _latency_worker(
    host: str,
    port: int,
    state: _LatencyState,
    *,
    worker: int,
    sender: str,
    recipient: str,
    body: bytes,
    op_timeout: float,
    max_reconnects: int,
) -> None:
    reconnects = 0
    seq = 0
    while state.remaining > 0 and reconnects <= max_reconnects:
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(op_timeout):
                reader, writer = await asyncio.open_connection(host, port)
                await _expect_reply(reader, "greeting", 220)
                await _command(reader, writer, f"EHLO latency-{worker}.localhost", 250)
            first = True
            while state.remaining > 0:
                state.remaining -= 1
                seq += 1
                try:
                    async with asyncio.timeout(op_timeout):
                        if not first:
                            await _command(reader, writer, "RSET", 250)
                        first = False
                        await _command(reader, writer, f"MAIL FROM:<{sender}>", 250)
                        await _command(reader, writer, f"RCPT TO:<{recipient}>", 250)
                        await _command(reader, writer, "DATA", 354)
                        headers = (
                            f"From: <{sender}>\r\nTo: <{recipient}>\r\n"
                            f"Subject: latency {worker}.{seq}\r\n"
                            f"Message-ID: <latency.{worker}.{seq}.{time.time_ns()}@localhost>\r\n"
                            "\r\n"
                        ).encode("ascii")
                        writer.write(headers + body + b".\r\n")
                        await writer.drain()
                        t0 = time.perf_counter()
                        code, _reply = await _read_reply(reader)
                        t1 = time.perf_counter()
                    if code // 100 == 2:
                        state.samples.append(t1 - t0)
                    else:
                        state.errors += 1
                except _SmtpReplyError:
                    state.errors += 1  # rejected inside a transaction: RSET and go on
            with contextlib.suppress(Exception):
                async with asyncio.timeout(op_timeout):
                    await _command(reader, writer, "QUIT", 221)
        except (OSError, TimeoutError, _SmtpReplyError):
            state.errors += 1
            reconnects += 1
        else:
            return
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()


async def measure_latency_async(
    host: str,
    port: int,
    *,
    messages: int,
    concurrency: int,
    size_bytes: int,
    recipient: str,
    sender: str,
    op_timeout: float = 30.0,
    total_timeout: float = 600.0,
    max_reconnects: int = 3,
) -> LatencyResult:
    """Async form of :func:`measure_latency` (for callers already inside an event loop)."""
    host = _require_loopback(host)
    if messages < 1 or concurrency < 1 or size_bytes < 0:
        raise ValueError("messages and concurrency must be >= 1, size_bytes >= 0")
    for addr in (sender, recipient):
        if any(c in addr for c in "\r\n<> ") or not addr.isascii():
            raise ValueError(f"bad address {addr!r}")
    state = _LatencyState(remaining=messages)
    body = _body(size_bytes)
    workers = min(concurrency, messages)
    start = time.perf_counter()
    async with asyncio.timeout(total_timeout), asyncio.TaskGroup() as group:
        for worker in range(workers):
            group.create_task(
                _latency_worker(
                    host,
                    port,
                    state,
                    worker=worker,
                    sender=sender,
                    recipient=recipient,
                    body=body,
                    op_timeout=op_timeout,
                    max_reconnects=max_reconnects,
                )
            )
    elapsed = time.perf_counter() - start
    samples = sorted(state.samples)
    return LatencyResult(
        messages=len(samples),
        errors=state.errors,
        concurrency=workers,
        size_bytes=size_bytes,
        elapsed_s=elapsed,
        p50_ms=_percentile(samples, 50) * 1000,
        p90_ms=_percentile(samples, 90) * 1000,
        p99_ms=_percentile(samples, 99) * 1000,
        max_ms=(samples[-1] * 1000) if samples else 0.0,
        mean_ms=(sum(samples) / len(samples) * 1000) if samples else 0.0,
        samples_s=tuple(state.samples),
    )


def measure_latency(
    host: str,
    port: int,
    *,
    messages: int,
    concurrency: int,
    size_bytes: int,
    recipient: str,
    sender: str,
    op_timeout: float = 30.0,
    total_timeout: float = 600.0,
    max_reconnects: int = 3,
) -> LatencyResult:
    """Send ``messages`` messages over ``concurrency`` reused connections; time each acceptance.

    Each worker opens one connection (EHLO once), then per message: RSET (from the second on),
    MAIL, RCPT, DATA, body + ``.``; the clock runs from the moment the final ``.`` has been
    handed to the socket to the reply (250 expected), i.e. the server's queue-file commit time.
    Bounded: at most ``messages`` transactions, each step within ``op_timeout`` seconds, all
    within ``total_timeout``.  Runs its own event loop (use :func:`measure_latency_async` from
    async code).
    """
    return asyncio.run(
        measure_latency_async(
            host,
            port,
            messages=messages,
            concurrency=concurrency,
            size_bytes=size_bytes,
            recipient=recipient,
            sender=sender,
            op_timeout=op_timeout,
            total_timeout=total_timeout,
            max_reconnects=max_reconnects,
        )
    )
