"""Who the server runs as: a user of its own, never root.

One job: the server's user and its rights. `sitemail init`, run as root, creates the system
user and group named by `[server] user` (default `sitemail`) and hands the data dir to it.
`sitemail serve`, started as root, hands the data dir over again (a file a root command left
there would otherwise be unreadable), then gives up root before it opens anything: it keeps
only CAP_NET_BIND_SERVICE, to bind ports below 1024, and drops that too once every listener is
bound (`drop_capabilities`). Started as that user with the capability (systemd's
AmbientCapabilities) it needs no root at all. Started as root with no user to switch to, it
refuses (NoUserError, exit 67 EX_NOUSER), unless told to stay root (`--allow-root`: the lab
and the test suite, whose data dirs only root can reach). Worker processes are started by
the server after the switch, so they run as its user, without any capability.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

from sitemail.config import ServerConfig
from sitemail.core.errors import ConfigError, NoUserError

__all__ = ["become_service_user", "drop_capabilities", "ensure_user", "give_back", "hand_over"]


_PR_SET_KEEPCAPS = 8
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAP_VERSION_3 = 0x20080522  # _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set
_CAP_NET_BIND_SERVICE = 10
_USERADD_TRIES = 5  # useradd fails while another holds /etc/passwd's lock: try again


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _set_capabilities(mask: int) -> None:
    """This process's effective and permitted capabilities become `mask` (none inheritable)."""
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    data[0].effective = data[0].permitted = mask
    if _libc().capset(ctypes.byref(header), data) != 0:
        error = ctypes.get_errno()
        raise ConfigError(f"cannot set the server's capabilities: {os.strerror(error)}")


def _prctl(option: int, value: int, extra: int = 0) -> None:
    _libc().prctl(option, value, extra, 0, 0)


def ensure_user(name: str) -> pwd.struct_passwd:
    """The system user `name`, created with a group of its own when missing (root only)."""
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    command = [
        useradd,
        "--system",
        "--user-group",
        "--home-dir",
        "/nonexistent",
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
        name,
    ]
    failure = ""
    for _ in range(_USERADD_TRIES):
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        except OSError as exc:
            raise ConfigError(f"cannot create user {name}: {exc.strerror}") from exc
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)  # made by us, or by a command racing us
        failure = done.stderr.strip() or f"useradd exited with {done.returncode}"
        time.sleep(0.2)
    raise ConfigError(f"cannot create user {name}: {failure}")


def hand_over(path: Path, uid: int, gid: int) -> None:
    """`path` and everything under it owned by uid:gid. By directory descriptors, never
    following a symbolic link (os.fwalk): a link planted in the data dir, or a directory
    swapped for one while we walk, cannot make root give away a file outside it."""
    if (path.lstat().st_uid, path.lstat().st_gid) != (uid, gid):
        os.lchown(path, uid, gid)
    for _, dirs, files, dir_fd in os.fwalk(path, follow_symlinks=False):
        for name in [*dirs, *files]:
            with contextlib.suppress(FileNotFoundError):  # a server's temporary file, gone
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if (st.st_uid, st.st_gid) != (uid, gid):
                    os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)


def give_back(data_dir: Path) -> None:
    """After a root command: what it created in a data dir that belongs to another user
    goes to that user (a certificate, a key, the database's journal), so the server, which
    runs as that user, can read it."""
    if os.geteuid() != 0:
        return
    try:
        st = data_dir.stat()
    except OSError:
        return
    if st.st_uid != 0:
        hand_over(data_dir, st.st_uid, st.st_gid)


def become_service_user(config: ServerConfig, *, allow_root: bool) -> str:
    """Give up root before the server opens anything (see the module docstring); what the
    server now runs as, for its log. Children started from here on inherit no capability."""
    with contextlib.suppress(OSError, AttributeError):
        _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
    if os.geteuid() != 0:
        name = _name_of(os.geteuid())
        _check_owner(config.data_dir, name)
        return name
    if allow_root:  # asked for explicitly; the risk is docs/deploy.md's to tell
        return "root (--allow-root)"
    user = _service_user(config)
    hand_over(config.data_dir, user.pw_uid, user.pw_gid)
    _prctl(_PR_SET_KEEPCAPS, 1)  # setuid keeps the permitted set: see _set_capabilities
    os.initgroups(user.pw_name, user.pw_gid)  # e.g. ssl-cert, to read a certificate's key
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)
    _prctl(_PR_SET_KEEPCAPS, 0)
    _set_capabilities(1 << _CAP_NET_BIND_SERVICE)
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)  # no set-user-ID program can give root back
    os.environ["HOME"] = user.pw_dir
    os.environ["USER"] = os.environ["LOGNAME"] = user.pw_name
    return user.pw_name


def _name_of(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _check_owner(data_dir: Path, name: str) -> None:
    """Not root: every file of the data dir must be ours, or the server would fail on it
    later (a database it cannot write); one clear error, with its fix, instead."""
    uid = os.geteuid()
    for top, dirs, files in os.walk(data_dir):
        for entry in [".", *dirs, *files]:
            path = Path(top) / entry
            with contextlib.suppress(FileNotFoundError):
                if path.lstat().st_uid != uid:
                    raise ConfigError(
                        f"{path.resolve()} belongs to {_name_of(path.lstat().st_uid)}, not to "
                        f"{name}, which runs the server; fix: chown -R {name}: {data_dir}"
                    )


def _service_user(config: ServerConfig) -> pwd.struct_passwd:
    name = config.user
    fix = (
        "create it (`sitemail init` as root does, or `useradd --system --user-group {0}`), "
        "set [server] user, or pass --allow-root to run as root"
    )
    if not name:
        raise NoUserError(
            "refusing to run as root: [server] user is empty; " + fix.format("sitemail")
        )
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        raise NoUserError(
            f"refusing to run as root: [server] user {name} does not exist; " + fix.format(name)
        ) from None
    if user.pw_uid == 0:
        raise NoUserError(
            f"refusing to run as root: [server] user {name} is root; " + fix.format("sitemail")
        )
    return user


def drop_capabilities() -> None:
    """Once every listener is bound: no capability is left (nothing binds a low port again)."""
    if os.geteuid() == 0:
        return  # --allow-root: root stays root
    with contextlib.suppress(ConfigError):
        _set_capabilities(0)
