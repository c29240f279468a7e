"""Server configuration: `sitemail.toml` in the data dir, read once into frozen dataclasses."""

from sitemail.config.model import (
    CONFIG_FILE,
    AdminConfig,
    DnsConfig,
    LimitsConfig,
    QueueConfig,
    ReplicationConfig,
    ServerConfig,
    SmtpConfig,
    TlsConfig,
    load_config,
    render_config,
)

__all__ = [
    "CONFIG_FILE",
    "AdminConfig",
    "DnsConfig",
    "LimitsConfig",
    "QueueConfig",
    "ReplicationConfig",
    "ServerConfig",
    "SmtpConfig",
    "TlsConfig",
    "load_config",
    "render_config",
]
