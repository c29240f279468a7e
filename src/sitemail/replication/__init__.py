"""Directory replication by mail: site keys, signed requests and answers, apply, pending partners."""

from sitemail.replication.keys import (
    PublicKey,
    SiteKey,
    fingerprint,
    generate_site_key,
    load_site_key,
    parse_public_key,
)

__all__ = [
    "PublicKey",
    "SiteKey",
    "fingerprint",
    "generate_site_key",
    "load_site_key",
    "parse_public_key",
]
