"""Server configuration: `sitemail.toml` in the data dir, read once into frozen dataclasses."""

from sitemail.config.model import (
    CONFIG_FILE,
    AdminConfig,
    AuthConfig,
    DnsConfig,
    ImapConfig,
    LimitsConfig,
    LogConfig,
    Pop3Config,
    QueueConfig,
    ReplicationConfig,
    ServerConfig,
    SmtpConfig,
    SubmissionConfig,
    TlsConfig,
    load_config,
    render_config,
)

__all__ = [
    "CONFIG_FILE",
    "AdminConfig",
    "AuthConfig",
    "DnsConfig",
    "ImapConfig",
    "LimitsConfig",
    "LogConfig",
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
