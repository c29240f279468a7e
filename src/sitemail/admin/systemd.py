"""Speaking to systemd: the service unit, readiness notification and the journal's levels.

One job: what systemd needs from sitemail. `unit_text` is the unit `sitemail service install`
writes (Type=notify, reload by SIGHUP, sandboxed, run as [server] user with
CAP_NET_BIND_SERVICE only); `notify` sends a state ("READY=1", "RELOADING=1", "STOPPING=1")
to $NOTIFY_SOCKET, the datagram protocol of sd_notify(3), written here (a few lines, no
library); `journal_handler` prefixes each log line with its syslog priority ("<3>" for an
error) when stderr is the journal, so `journalctl -p err` finds errors.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
from pathlib import Path

from sitemail.config import ServerConfig
from sitemail.core.errors import UsageError

__all__ = ["UNIT_NAME", "executable", "journal_handler", "notify", "unit_text"]

log = logging.getLogger("sitemail.systemd")

UNIT_NAME = "sitemail.service"
_STOP_MARGIN = 15  # seconds systemd waits past [server] shutdown_timeout before SIGKILL
# Where ProtectHome= hides everything: a data dir there cannot be reached by the service.
_HIDDEN = (Path("/home"), Path("/root"), Path("/run/user"))


def executable() -> Path:
    """The `sitemail` command of this installation (beside this interpreter in a virtualenv,
    else on PATH)."""
    beside = Path(sys.executable).with_name("sitemail")
    if beside.is_file():
        return beside
    found = shutil.which("sitemail")
    if found is None:
        raise UsageError("cannot find the sitemail command: install sitemail first")
    return Path(found).resolve()


def unit_text(config: ServerConfig, command: Path) -> str:
    """The systemd unit of the server of `config`, started by `command` (docs/deploy.md)."""
    data_dir = config.data_dir.resolve()
    for hidden in _HIDDEN:
        if data_dir == hidden or hidden in data_dir.parents:
            raise UsageError(
                f"data dir {data_dir} is under {hidden}, which the service's sandbox hides "
                "(ProtectHome): use a directory such as /var/lib/sitemail"
            )
    stop = int(config.shutdown_timeout) + _STOP_MARGIN
    return f"""# sitemail: written by `sitemail service install` (docs/deploy.md)
[Unit]
Description=sitemail mail server ({data_dir})
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={command} serve --data-dir {data_dir}
ExecReload=/bin/kill -HUP $MAINPID
User={config.user}
Group={config.user}
UMask=0077
Restart=on-failure
RestartSec=5
TimeoutStartSec=120
TimeoutStopSec={stop}
KillMode=mixed
LimitNOFILE=65536
StandardOutput=journal
StandardError=journal
SyslogIdentifier=sitemail

# Ports below 1024 without root; no other privilege, ever.
AmbientCapabilities=CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
NoNewPrivileges=yes
# The file system is read-only but for the data dir; /home and /tmp are not shared.
ProtectSystem=strict
ReadWritePaths={data_dir}
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
# IPv4 and IPv6 for mail; Unix sockets for the control channel, systemd and the journal.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
"""


def notify(state: str) -> bool:
    """Send `state` to the service manager (sd_notify); False when there is none to tell."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):  # the abstract namespace
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(state.encode(), address)
        except OSError as exc:
            log.warning("cannot notify the service manager (%s): %s", state, exc.strerror)
            return False
    return True


class _JournalFormatter(logging.Formatter):
    """sd-daemon(3)'s "<priority>" prefix; the journal adds the time and the process."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.CRITICAL:
            priority = 2
        elif record.levelno >= logging.ERROR:
            priority = 3
        elif record.levelno >= logging.WARNING:
            priority = 4
        elif record.levelno >= logging.INFO:
            priority = 6
        else:
            priority = 7
        return f"<{priority}>" + super().format(record).replace("\n", f"\n<{priority}>")


def journal_handler() -> logging.Handler | None:
    """A handler for stderr in the journal's format, when stderr is the journal
    ($JOURNAL_STREAM names its device and inode); None otherwise."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return None
    if not (device.isdigit() and inode.isdigit()):
        return None
    if (st.st_dev, st.st_ino) != (int(device), int(inode)):
        return None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    return handler
