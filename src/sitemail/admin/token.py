"""The admin API's bearer token and address: made at `sitemail init`, kept in the data dir.

One job: create, read and check the token that every `/api/` request must carry, and say where
the API listens. The token is 32 random bytes (URL-safe base64) in `admin-token`, mode 0600,
written atomically; a data dir made before the API existed gets one on first use
(`sitemail admin token`, or the server's start). Checks compare in constant time.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import os
import secrets
from pathlib import Path

from sitemail.config import ServerConfig
from sitemail.core.errors import ConfigError

__all__ = [
    "METRICS_TOKEN_FILE",
    "TOKEN_FILE",
    "admin_address",
    "admin_url",
    "check_admin_exposure",
    "check_token",
    "ensure_token",
    "read_token",
]

TOKEN_FILE = "admin-token"  # noqa: S105 - the file name, not a secret
# A second token that opens /metrics and nothing else: what a Prometheus server is given.
METRICS_TOKEN_FILE = "metrics-token"  # noqa: S105 - the file name, not a secret


def read_token(data_dir: Path, name: str = TOKEN_FILE) -> str | None:
    """The token of `data_dir` (`name`: which one), or None when it has none yet."""
    try:
        text = (data_dir / name).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the token {data_dir / name}: {exc}") from exc
    return text or None


def ensure_token(data_dir: Path, name: str = TOKEN_FILE) -> str:
    """The token of `data_dir` (`name`: which one), made now (mode 0600) when there is none."""
    existing = read_token(data_dir, name)
    if existing is not None:
        return existing
    token = secrets.token_urlsafe(32)
    path = data_dir / name
    temp = data_dir / f".{name}.{os.getpid()}"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(token + "\n")
        os.link(temp, path)  # fails if another process made one meanwhile: keep theirs
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot write the token {path}: {exc.strerror}") from exc
    finally:
        with contextlib.suppress(OSError):
            temp.unlink()
    found = read_token(data_dir, name)
    if found is None:
        raise ConfigError(f"the token {path} is empty: delete it to make a new one")
    return found


def check_token(expected: str, given: str) -> bool:
    """Whether `given` is the token, compared in constant time."""
    return hmac.compare_digest(expected.encode(), given.encode())


def admin_address(config: ServerConfig) -> tuple[str, int]:
    """(address, port) the admin API listens on; port 0 when it is switched off. By default
    a loopback address: the server's first listen address when it is one (each site of the
    lab on its own 127.x address), else 127.0.0.1 (::1 for a server listening on IPv6)."""
    if config.admin.listen:
        return config.admin.listen, config.admin.port
    first = ipaddress.ip_address(config.listen[0])
    if first.is_loopback:
        return config.listen[0], config.admin.port
    return ("::1" if first.version == 6 else "127.0.0.1"), config.admin.port


def check_admin_exposure(config: ServerConfig) -> None:
    """ConfigError unless the admin port is on loopback or served over TLS: the token and
    the console's session cookie must never cross a network in clear."""
    host, port = admin_address(config)
    if port and not config.admin.tls and not ipaddress.ip_address(host).is_loopback:
        raise ConfigError(
            f"[admin] listen = {host} is not a loopback address, and the admin API and "
            "console would carry the admin token there in clear: set [admin] tls = true (served "
            "with this server's certificate, `sitemail tls set`), or leave [admin] listen empty "
            "and reach it through an SSH tunnel (docs/console.md)"
        )


def admin_url(config: ServerConfig) -> str:
    """Base URL of the admin API ("" when it is switched off)."""
    host, port = admin_address(config)
    if not port:
        return ""
    if ipaddress.ip_address(host).version == 6:
        host = f"[{host}]"
    return f"{'https' if config.admin.tls else 'http'}://{host}:{port}"
