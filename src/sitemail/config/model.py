"""Read and validate `sitemail.toml`; write the initial one at `sitemail init`.

One job: turn the file into a `ServerConfig` (frozen, fully validated) or raise `ConfigError`
naming the file, the key and what is wrong, so a bad setting stops the server at start with one
clear line, never a traceback later. Unknown keys are errors too: a typo must not be ignored.
The directory (sites, recipients, routes) is *not* here: it lives in the database and replicates.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sitemail.core.errors import ConfigError

__all__ = [
    "CONFIG_FILE",
    "AdminConfig",
    "AuthConfig",
    "DnsConfig",
    "ImapConfig",
    "LimitsConfig",
    "LogConfig",
    "MailauthConfig",
    "Pop3Config",
    "QueueConfig",
    "ReplicationConfig",
    "ServerConfig",
    "SmtpConfig",
    "SubmissionConfig",
    "TlsConfig",
    "load_config",
    "render_config",
]

CONFIG_FILE = "sitemail.toml"


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """Listeners and outbound delivery."""

    port: int = 25
    outbound_port: int = 25  # the lab runs every site on one port number on its own address
    smart_host: str = ""  # "host[:port]"; empty: deliver by MX
    trusted_networks: tuple[str, ...] = ()  # clients allowed to relay without AUTH


@dataclass(frozen=True, slots=True)
class ImapConfig:
    """IMAP4rev1 listeners; 0 switches one off."""

    port: int = 143  # STARTTLS
    tls_port: int = 993  # implicit TLS
    max_literal: int = 50 * 1024 * 1024  # APPEND and any other literal, refused above this
    max_line: int = 64 * 1024  # a command line without its literals
    idle_poll: float = 0.25  # seconds between checks of an idle client's folder


@dataclass(frozen=True, slots=True)
class Pop3Config:
    """POP3 listeners; 0 switches one off."""

    port: int = 110  # STLS
    tls_port: int = 995  # implicit TLS


@dataclass(frozen=True, slots=True)
class SubmissionConfig:
    """Message submission for the site's own users (RFC 6409); 0 switches one off."""

    port: int = 587  # STARTTLS, then AUTH
    tls_port: int = 465  # implicit TLS (RFC 8314)


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Client authentication (IMAP, POP3, submission): delays and lock-out per client address
    and per account."""

    failure_delay: float = 2.0  # seconds before any failed attempt is answered
    max_failures: int = 10  # failures from one client address, or for one account, in `window`...
    window: float = 900.0
    lockout: float = 900.0  # ...lock that address (account) out of every login for this long


@dataclass(frozen=True, slots=True)
class TlsConfig:
    cert_file: str = "tls/cert.pem"  # relative paths are inside the data dir
    key_file: str = "tls/key.pem"


@dataclass(frozen=True, slots=True)
class DnsConfig:
    """Name servers as "ip", "ip:port" or "[ipv6]:port"; empty means none (domain routes and
    smart host only)."""

    nameservers: tuple[str, ...] = ()
    timeout: float = 5.0
    # The DMARC record `sitemail dns records` publishes (docs/dns-records.md): the policy for
    # mail failing DMARC that claims our domains, and where aggregate reports go ("" none).
    dmarc_policy: str = "quarantine"
    dmarc_rua: str = ""

    def servers(self) -> list[tuple[str, int]]:
        """(address, port) of every name server (the entries are validated at load)."""
        return [split_nameserver(entry) for entry in self.nameservers]


def split_nameserver(entry: str) -> tuple[str, int]:
    """ "127.0.0.1" -> ("127.0.0.1", 53); "127.0.0.1:5353", "::1", "[::1]:5353" likewise."""
    text = entry.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""  # an IPv4 address, or an IPv6 address without a port
    return host, int(port) if port.isdigit() else (53 if not port else -1)


@dataclass(frozen=True, slots=True)
class QueueConfig:
    retry_initial: float = 300.0  # seconds; doubles per attempt
    retry_max: float = 3600.0
    expiry: float = 48 * 3600.0
    delay_notice: float = 4 * 3600.0  # 0 disables delay notices
    hop_limit: int = 50
    # Seconds a server's claim on a message it delivers lasts without renewal: another server
    # of the site takes the message over after it (queue.claims; a dead server's mail).
    claim_lease: float = 60.0
    # Bytes kept free in the data dir's file system: below it MAIL answers 452 4.3.1
    # (Postfix's queue_minfree). 0: 1.5 x [limits] message_size, as Postfix does.
    min_free: int = 0

    def reserve(self, message_size: int) -> int:
        """The free space MAIL requires, in bytes."""
        return self.min_free or message_size * 3 // 2


@dataclass(frozen=True, slots=True)
class ReplicationConfig:
    """Directory replication timing (seconds). Connector schedules live in the directory."""

    startup_delay: float = 300.0  # every connector requests this long after start
    request_timeout: float = 7200.0  # an unanswered request may be sent again after this
    message_ttl: float = 48 * 3600.0  # a replication message expires (never DSNs) after this
    kcc_interval: float = 3 * 3600.0
    tombstone_lifetime: float = 30 * 86400.0
    gc_interval: float = 12 * 3600.0
    # A queued recipient of an authoritative domain that no site is known to have waits at
    # most this long for replication to catch up with every site before it bounces.
    unknown_recipient_window: float = 4 * 3600.0


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Defaults from reliability-bar.md (Postfix / RFC 5321 column)."""

    message_size: int = 10_240_000
    recipients: int = 1000
    line_length: int = 1000  # RFC 5321 4.5.3.1.6 text line, CRLF included
    command_length: int = 512
    timeout: float = 300.0
    data_timeout: float = 600.0
    connections_per_client: int = 20
    connections_total: int = 500
    stress_timeout: float = 10.0  # idle/pre-MAIL timeout above 80% of connections_total
    error_limit: int = 10  # errors before the session is closed (421)
    error_delay: float = 1.0  # tarpit per error beyond the first few


@dataclass(frozen=True, slots=True)
class MailauthConfig:
    """DKIM signing on the way out, SPF/DKIM/DMARC checks at the edge (docs/mailauth.md)."""

    sign: bool = True  # DKIM-sign mail leaving the organisation from its domains
    max_size: int = 64 * 1024 * 1024  # bigger: not DKIM-signed nor verified (read whole)
    check: bool = True  # SPF, DKIM and DMARC on mail from the Internet
    authserv_id: str = ""  # Authentication-Results' id; empty: the organisation's name
    quarantine: str = "junk"  # DMARC p=quarantine: "junk", "reject" or "accept"
    reject_own_domain_spoof: bool = True  # our From domains without DMARC alignment: 550
    dns_timeout: float = 5.0  # seconds for all of one message's lookups


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The admin HTTP API and the web console, served by `sitemail serve`."""

    listen: str = ""  # an IP address; empty: loopback (the first [server] listen if loopback)
    port: int = 8025  # 0 switches the admin API off
    tls: bool = False  # https with the server's certificate; required off loopback


@dataclass(frozen=True, slots=True)
class LogConfig:
    """How `sitemail serve` writes its log (docs/events.md)."""

    format: str = "text"  # "text": `time LEVEL logger: message`; "json": one object a line


@dataclass(frozen=True, slots=True)
class ServerConfig:
    data_dir: Path
    server: str
    site: str
    listen: tuple[str, ...]
    database_url: str = ""  # empty: SQLite file in the data dir
    shutdown_timeout: float = 30.0  # seconds from SIGTERM to exit (docs/ims.md, Stopping)
    user: str = "sitemail"  # started as root, the server runs as this user (docs/deploy.md)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    replication: ReplicationConfig = field(default_factory=ReplicationConfig)
    imap: ImapConfig = field(default_factory=ImapConfig)
    pop3: Pop3Config = field(default_factory=Pop3Config)
    submission: SubmissionConfig = field(default_factory=SubmissionConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    log: LogConfig = field(default_factory=LogConfig)
    mailauth: MailauthConfig = field(default_factory=MailauthConfig)

    def path(self, relative: str) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else self.data_dir / p


def _section(cls: type[Any], raw: object, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table")
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown setting {key!r} (known: {', '.join(known)})")
        default = known[key].default
        values[key] = _coerce(value, default, f"{where}.{key}")
    return cls(**values)


def _coerce(value: object, default: object, where: str) -> object:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{where}: expected a non-negative integer, got {value!r}")
        return value
    if isinstance(default, float):
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{where}: expected a non-negative number, got {value!r}")
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(value)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _check_port(port: int, where: str) -> None:
    if not 0 < port < 65536:
        raise ConfigError(f"{where}: port must be 1-65535, got {port}")


def _check_address(text: str, where: str) -> None:
    try:
        ipaddress.ip_address(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: not an IP address: {text!r}") from exc


def load_config(data_dir: Path) -> ServerConfig:
    """Read `data_dir/sitemail.toml`; every problem is a `ConfigError` naming file and key."""
    path = data_dir / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(
            f"{path} not found: is {data_dir} a sitemail data dir? (create one with `sitemail init`)"
        )
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"{path}: cannot parse: {exc}") from exc
    where = str(path)
    server_raw = raw.pop("server", None)
    if not isinstance(server_raw, dict):
        raise ConfigError(f"{where}: missing [server] table")
    sections = {
        "smtp": SmtpConfig,
        "tls": TlsConfig,
        "dns": DnsConfig,
        "queue": QueueConfig,
        "limits": LimitsConfig,
        "replication": ReplicationConfig,
        "imap": ImapConfig,
        "pop3": Pop3Config,
        "submission": SubmissionConfig,
        "auth": AuthConfig,
        "admin": AdminConfig,
        "log": LogConfig,
        "mailauth": MailauthConfig,
    }
    parsed = {
        name: _section(cls, raw.pop(name, {}), f"{where} [{name}]")
        for name, cls in sections.items()
    }
    if raw:
        raise ConfigError(f"{where}: unknown table(s) {', '.join(sorted(raw))}")
    config = _server(server_raw, data_dir, f"{where} [server]", parsed)
    _validate(config, where)
    return config


def _server(
    raw: dict[str, Any], data_dir: Path, where: str, parsed: dict[str, Any]
) -> ServerConfig:
    allowed = {"name", "site", "listen", "database_url", "shutdown_timeout", "user"}
    unknown = set(raw) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
    for key in ("name", "site"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ConfigError(f"{where}: {key!r} must be a non-empty string")
    listen = raw.get("listen", [])
    if not isinstance(listen, list) or not listen or not all(isinstance(a, str) for a in listen):
        raise ConfigError(f"{where}: 'listen' must be a non-empty list of IP addresses")
    database_url = raw.get("database_url", "")
    if not isinstance(database_url, str):
        raise ConfigError(f"{where}: 'database_url' must be a string")
    shutdown_timeout = raw.get("shutdown_timeout", 30.0)
    if not isinstance(shutdown_timeout, int | float) or isinstance(shutdown_timeout, bool):
        raise ConfigError(f"{where}: 'shutdown_timeout' must be a number of seconds")
    if not 1 <= shutdown_timeout <= 3600:
        raise ConfigError(f"{where}: 'shutdown_timeout' must be 1-3600 s, got {shutdown_timeout}")
    user = raw.get("user", "sitemail")
    if not isinstance(user, str):
        raise ConfigError(f"{where}: 'user' must be a user name")
    return ServerConfig(
        data_dir=data_dir,
        user=user,
        server=raw["name"],
        site=raw["site"],
        listen=tuple(listen),
        database_url=database_url,
        shutdown_timeout=float(shutdown_timeout),
        **parsed,
    )


def _validate(config: ServerConfig, where: str) -> None:
    for address in config.listen:
        _check_address(address, f"{where} [server] listen")
    _check_port(config.smtp.port, f"{where} [smtp] port")
    _check_port(config.smtp.outbound_port, f"{where} [smtp] outbound_port")
    _validate_client_access(config, where)
    if config.log.format not in {"text", "json"}:
        raise ConfigError(f"{where} [log] format: 'text' or 'json', got {config.log.format!r}")
    if config.admin.listen:
        _check_address(config.admin.listen, f"{where} [admin] listen")
    if config.admin.port:  # 0: the admin API is off
        _check_port(config.admin.port, f"{where} [admin] port")
    for server in config.dns.nameservers:
        host, port = split_nameserver(server)
        _check_address(host, f"{where} [dns] nameservers")
        if port < 0:
            raise ConfigError(f"{where} [dns] nameservers: bad port in {server!r}")
        _check_port(port, f"{where} [dns] nameservers")
    _validate_dmarc(config, where)
    for net in config.smtp.trusted_networks:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError as exc:
            raise ConfigError(f"{where} [smtp] trusted_networks: bad network {net!r}") from exc
    if config.queue.retry_initial <= 0 or config.queue.retry_max < config.queue.retry_initial:
        raise ConfigError(f"{where} [queue]: need 0 < retry_initial <= retry_max")
    if config.replication.tombstone_lifetime < 2 * 86400:
        raise ConfigError(f"{where} [replication]: tombstone_lifetime must be at least 2 days")
    if config.mailauth.quarantine not in ("junk", "reject", "accept"):
        raise ConfigError(f"{where} [mailauth] quarantine: one of junk, reject, accept")
    if config.limits.command_length < 512 or config.limits.line_length < 1000:
        raise ConfigError(
            f"{where} [limits]: RFC 5321 requires command_length >= 512, line_length >= 1000"
        )


DMARC_POLICIES = ("none", "quarantine", "reject")


def _validate_dmarc(config: ServerConfig, where: str) -> None:
    if config.dns.dmarc_policy not in DMARC_POLICIES:
        raise ConfigError(
            f"{where} [dns] dmarc_policy: one of {', '.join(DMARC_POLICIES)}, "
            f"got {config.dns.dmarc_policy!r}"
        )
    rua = config.dns.dmarc_rua
    if rua and not all(
        part.strip().startswith("mailto:") and "@" in part for part in rua.split(",")
    ):
        raise ConfigError(
            f"{where} [dns] dmarc_rua: mailto: URIs separated by commas "
            f"(e.g. mailto:dmarc@example.com), got {rua!r}"
        )


def _validate_client_access(config: ServerConfig, where: str) -> None:
    for section in ("imap", "pop3", "submission"):
        for key in ("port", "tls_port"):
            port = getattr(getattr(config, section), key)
            if port:  # 0: that listener is off
                _check_port(port, f"{where} [{section}] {key}")
    if config.imap.max_literal < 1024 or config.imap.max_line < 1024:
        raise ConfigError(f"{where} [imap]: max_literal and max_line must be at least 1024")
    if config.auth.max_failures < 1:
        raise ConfigError(f"{where} [auth]: max_failures must be at least 1")


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_config(*, server: str, site: str, listen: list[str], database_url: str = "") -> str:
    """The initial `sitemail.toml` written by `sitemail init`, defaults shown as comments."""
    listen_list = ", ".join(_toml_str(a) for a in listen)
    return f"""# sitemail server configuration (read once at start; see docs/configuration.md)
[server]
name = {_toml_str(server)}
site = {_toml_str(site)}
listen = [{listen_list}]
# database_url = "postgresql+psycopg://user@host/db"   # default: sitemail.db in this directory
# shutdown_timeout = 30        # seconds from SIGTERM to exit: replies and records finish first
# user = "sitemail"            # started as root, the server binds its ports, then runs as this
{"database_url = " + _toml_str(database_url) if database_url else ""}

[smtp]
# port = 25
# outbound_port = 25
# smart_host = ""
# trusted_networks = []

[imap]
# port = 143                   # STARTTLS; 0 switches it off
# tls_port = 993               # implicit TLS

[pop3]
# port = 110                   # STLS
# tls_port = 995

[submission]
# port = 587                   # STARTTLS, then AUTH
# tls_port = 465               # implicit TLS

[auth]
# failure_delay = 2            # seconds before a failed login is answered
# max_failures = 10            # failures from one address (or for one account) within window...
# window = 900
# lockout = 900                # ...lock that address (account) out for this long

[dns]
# nameservers = ["127.0.0.1:53"]
# dmarc_policy = "quarantine"  # the DMARC policy `sitemail dns records` publishes
# dmarc_rua = ""               # e.g. "mailto:dmarc@example.com": aggregate reports

[queue]
# retry_initial = 300
# retry_max = 3600
# expiry = 172800
# delay_notice = 14400
# hop_limit = 50
# min_free = 0                 # bytes kept free; 0: 1.5 x [limits] message_size

[limits]
# message_size = 10240000
# recipients = 1000

[replication]
# startup_delay = 300          # seconds after start before every connector requests
# request_timeout = 7200       # an unanswered request is sent again after this
# message_ttl = 172800
# kcc_interval = 10800
# tombstone_lifetime = 2592000 # 30 days
# gc_interval = 43200
# unknown_recipient_window = 14400  # an unknown user of our domains waits for replication

[admin]
# listen = ""                  # default: loopback only (reach it by SSH tunnel: docs/console.md)
# port = 8025                  # 0 switches the admin API off (token: `sitemail admin token`)
# tls = false                  # https with this server's certificate; required when listen is
#                              # not a loopback address

[mailauth]
# sign = true                  # DKIM-sign mail leaving the organisation (docs/mailauth.md)
# check = true                 # SPF, DKIM and DMARC on mail from the Internet
# quarantine = "junk"          # DMARC p=quarantine: "junk", "reject" or "accept"
# authserv_id = ""             # Authentication-Results id; default: the organisation's name

[log]
# format = "text"              # or "json": one object a line (docs/events.md)
"""
