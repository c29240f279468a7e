"""The replication tests use the shared multi-site harness (tests/support/org.py)."""

from tests.support.org import Org, Site, free_port, idle, organisation, until

__all__ = ["Org", "Site", "free_port", "idle", "organisation", "until"]
