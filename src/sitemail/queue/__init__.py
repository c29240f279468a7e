"""The durable queue: spool with group commit, scheduler, retries, expiry, DSNs, tracking."""
