"""Counting open client connections, per client address and in total (no I/O here).

One job: say whether one more connection may be served. The IMAP and POP3 listeners use it
with `[limits] connections_per_client` and `connections_total` (the SMTP engine wraps it
to answer 421); a refused client is told why and disconnected before anything else.
"""

from __future__ import annotations

__all__ = ["ConnectionCounter"]


class ConnectionCounter:
    def __init__(self, per_client: int, total: int) -> None:
        self._per_client = per_client
        self._total_limit = total
        self._by_ip: dict[str, int] = {}
        self.total = 0

    def acquire(self, peer_ip: str) -> str | None:
        """Count one more connection, or return why it is refused (nothing is counted then)."""
        if self.total >= self._total_limit:
            return "too many connections, try again later"
        if self._by_ip.get(peer_ip, 0) >= self._per_client:
            return "too many connections from your address"
        self._by_ip[peer_ip] = self._by_ip.get(peer_ip, 0) + 1
        self.total += 1
        return None

    def held(self, peer_ip: str) -> int:
        """How many connections this client address holds now."""
        return self._by_ip.get(peer_ip, 0)

    def release(self, peer_ip: str) -> None:
        left = self._by_ip.get(peer_ip, 0) - 1
        if left > 0:
            self._by_ip[peer_ip] = left
        else:
            self._by_ip.pop(peer_ip, None)
        self.total = max(0, self.total - 1)
