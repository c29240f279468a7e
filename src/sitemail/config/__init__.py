"""Server configuration: `sitemail.toml` in the data dir, read once into frozen dataclasses."""

from sitemail.config.model import (
    CONFIG_FILE,
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
