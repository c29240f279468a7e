"""SMTP replies as values: basic code, enhanced status code (RFC 3463) and text.

Policy code returns a `Reply`; only the SMTP engine turns it into bytes. Every reply we send
carries an enhanced status code, so every reply is built here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Reply"]


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: `code` 2xx-5xx, `enhanced` like "5.1.1" (empty for 220/221 greetings)."""

    code: int
    enhanced: str
    text: str

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def is_temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def render(self) -> str:
        """The reply line(s) without the final CRLF; multi-line text gets `code-` continuations."""
        lines = self.text.splitlines() or [""]
        prefix = f"{self.enhanced} " if self.enhanced else ""
        out = [f"{self.code}-{prefix}{line}" for line in lines[:-1]]
        out.append(f"{self.code} {prefix}{lines[-1]}")
        return "\r\n".join(out)

    def __str__(self) -> str:
        return self.render()
