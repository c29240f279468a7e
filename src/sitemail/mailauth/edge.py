"""The Internet edge's checks on a message: SPF, DKIM, DMARC, and what to do with it.

One job: for a message that arrived from the Internet (not from a sibling site, not an
authenticated or trusted client: the caller decides that), at the end of DATA:
- SPF (RFC 7208, pyspf) for MAIL FROM, or for the HELO name with the null sender; pyspf
  enforces the 10-lookup and 2-void-lookup limits;
- DKIM (RFC 6376 and RFC 8463, dkimpy): each of the first `_MAX_SIGNATURES` signatures;
- DMARC (RFC 7489, mailauth.dmarc) for the From domain, with the policy found in DNS;
- the verdict: `p=reject` -> 550 5.7.1; `p=quarantine` -> [mailauth] quarantine ("junk":
  accepted and marked for the Junk folder, "reject", or "accept"); a From at one of the
  organisation's own domains without DMARC alignment -> 550 5.7.1 whatever our policy says
  (451 4.7.5 when a DNS failure may be the cause);
- the message as it is stored: every Authentication-Results field carrying our authserv-id
  and every quarantine mark that came from outside removed (RFC 8601 section 5), our own
  Authentication-Results (and the mark, when quarantined) put on top.

Every lookup goes through mailauth.dnstxt (the site's name servers, one time budget for the
message). The libraries are synchronous, so the whole evaluation runs in a worker thread;
dkimpy reads the whole message, so a message over [mailauth] max_size gets `dkim=neutral`
(not verified) and is judged on SPF alone.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import dkim
import dkim.util
import spf

from sitemail.config import MailauthConfig, ServerConfig
from sitemail.core.envelope import Envelope
from sitemail.core.reply import Reply
from sitemail.mailauth import dnstxt
from sitemail.mailauth.dmarc import (
    DmarcPolicy,
    DmarcVerdict,
    Policy,
    evaluate,
    pick_record,
    policy_domains,
)
from sitemail.mailauth.headers import QUARANTINE_FIELD, from_domain, from_domains, without_fields
from sitemail.queue.content import Content

__all__ = [
    "AuthOutcome",
    "DkimOutcome",
    "EdgeChecker",
    "authserv_id_of",
    "edge_check_for",
]

log = logging.getLogger("sitemail.mailauth")

_MAX_SIGNATURES = 5  # DKIM signatures verified per message; more are not looked at
_THREADS = 32  # messages checked at once


@dataclass(frozen=True, slots=True)
class DkimOutcome:
    result: str  # pass, fail, temperror, permerror, neutral
    domain: str
    selector: str
    b: str  # the first characters of the signature (RFC 6008 header.b)


@dataclass(slots=True)
class AuthOutcome:
    """Everything the checks found for one message."""

    spf: str = "none"
    spf_identity: str = ""  # "smtp.mailfrom=..." or "smtp.helo=..."
    spf_domain: str = ""
    dkim: list[DkimOutcome] = field(default_factory=list)
    from_domain: str | None = None  # the one From domain DMARC judges (None: no single one)
    from_domains: list[str] = field(default_factory=list)  # every From address's domain
    dmarc: DmarcVerdict | None = None
    dmarc_error: str = ""  # temperror / permerror when the record could not be had
    dns_lookups: int = 0

    @property
    def temporary(self) -> bool:
        """Whether a DNS failure may be why SPF or DKIM did not pass (the DMARC record's
        own lookup does not count: our own domains are judged whatever it says)."""
        return self.spf == "temperror" or any(d.result == "temperror" for d in self.dkim)


def authserv_id_of(value: str) -> str:
    """The authserv-id that starts an Authentication-Results value (lowercase)."""
    head = value.split(";", 1)[0].strip()
    return head.split()[0].lower() if head else ""


class EdgeChecker:
    """SPF, DKIM and DMARC on mail from the Internet, one verdict per message."""

    def __init__(
        self,
        config: MailauthConfig,
        nameservers: Sequence[tuple[str, int]],
        *,
        authserv_id: str,
        is_org_domain: Callable[[str], bool],
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._resolver = dnstxt.caching_resolver(nameservers)
        # The checks wait on DNS most of the time: more threads than asyncio's default pool
        # (CPUs + 4), so 50 sessions do not queue behind 6 lookups.
        self._threads = ThreadPoolExecutor(_THREADS, thread_name_prefix="mailauth")
        self.authserv_id = authserv_id.lower()
        self._is_org_domain = is_org_domain
        self._rng = rng or random.Random()  # noqa: S311 - DMARC pct= sampling

    async def check(self, envelope: Envelope, content: Content) -> Reply | Content:
        """A refusal, or the message to store (with our Authentication-Results on top)."""
        loop = asyncio.get_running_loop()
        outcome = await loop.run_in_executor(self._threads, self.evaluate, envelope, content)
        reply, quarantine = self._verdict(outcome)
        log.info(
            "mailauth peer=%s spf=%s dkim=%s dmarc=%s from=%s lookups=%d action=%s",
            envelope.client_address,
            outcome.spf,
            ",".join(f"{d.result}:{d.domain}" for d in outcome.dkim) or "none",
            outcome.dmarc.result if outcome.dmarc else outcome.dmarc_error or "none",
            outcome.from_domain or "",
            outcome.dns_lookups,
            "refuse" if reply else "junk" if quarantine else "accept",
        )
        if reply is not None:
            return reply
        stripped = without_fields(content, self._from_outside)
        fields = self.results_field(outcome)
        if quarantine:
            fields += f"{QUARANTINE_FIELD}: {self.authserv_id}; {quarantine}\r\n".encode()
        return stripped.with_prefix(fields)

    def _from_outside(self, name: str, value: str) -> bool:
        """Fields only this organisation may write, found in a message from outside."""
        if name == "authentication-results":
            return authserv_id_of(value) == self.authserv_id
        return name == QUARANTINE_FIELD.lower()

    # -- the evaluation (blocking: in a worker thread) -------------------------------------

    def evaluate(self, envelope: Envelope, content: Content) -> AuthOutcome:
        """Run every check (blocking; DNS bounded by [mailauth] dns_timeout)."""
        lookups = dnstxt.Lookups(self._resolver, self._config.dns_timeout)
        token = dnstxt.current().set(lookups)
        try:
            outcome = AuthOutcome()
            self._spf(outcome, envelope)
            message = content.whole() if content.size <= self._config.max_size else None
            self._dkim(outcome, message, lookups)
            self._dmarc(outcome, content.head, lookups)
            outcome.dns_lookups = lookups.count
            return outcome
        finally:
            dnstxt.current().reset(token)

    def _spf(self, outcome: AuthOutcome, envelope: Envelope) -> None:
        helo = envelope.client_name.strip().lower().rstrip(".")
        sender = envelope.sender
        if sender and "@" in sender:
            outcome.spf_domain = sender.rpartition("@")[2].lower().rstrip(".")
            outcome.spf_identity = f"smtp.mailfrom={outcome.spf_domain}"
            identity = sender
        else:  # the null sender: the HELO identity (RFC 7208 section 2.3)
            outcome.spf_domain = helo
            outcome.spf_identity = f"smtp.helo={helo}"
            identity = f"postmaster@{helo}"
        if not outcome.spf_domain or helo.startswith("["):
            outcome.spf = "none"
            return
        budget = self._config.dns_timeout
        try:
            query = spf.query(
                i=envelope.client_address, s=identity, h=helo, timeout=budget, querytime=budget
            )
            result, _, _ = query.check()
        except Exception as exc:  # pyspf raises on some malformed input: no SPF verdict
            log.info("mailauth spf error for %s: %r", identity, exc)
            result = "permerror"
        outcome.spf = str(result)

    def _dkim(self, outcome: AuthOutcome, message: bytes | None, lookups: dnstxt.Lookups) -> None:
        if message is None:
            outcome.dkim.append(DkimOutcome("neutral", "", "", "message too big to verify"))
            return
        try:
            verifier = dkim.DKIM(message, minkey=1024)
        except dkim.DKIMException:
            return
        signatures = [v for k, v in verifier.headers if k.lower() == b"dkim-signature"]
        for index, raw in enumerate(signatures[:_MAX_SIGNATURES]):
            try:
                tags = dkim.util.parse_tag_value(raw)
            except dkim.util.InvalidTagValueList:
                tags = {}
            domain = tags.get(b"d", b"").decode("ascii", "replace").lower()
            selector = tags.get(b"s", b"").decode("ascii", "replace")
            b = b"".join(tags.get(b"b", b"").split())[:8].decode("ascii", "replace")
            try:
                result = "pass" if verifier.verify(index, dnsfunc=lookups.dkim_key) else "fail"
            except dnstxt.DnsTempError:
                result = "temperror"
            except dkim.ValidationError as exc:  # dkimpy's one class for both; see RFC 8601
                result = "fail" if "body hash mismatch" in str(exc) else "permerror"
            except dkim.DKIMException:
                result = "permerror"
            outcome.dkim.append(DkimOutcome(result, domain, selector, b))

    def _dmarc(self, outcome: AuthOutcome, head: bytes, lookups: dnstxt.Lookups) -> None:
        domain = from_domain(head)
        outcome.from_domain = domain
        outcome.from_domains = from_domains(head)
        if domain is None:
            return
        policy: DmarcPolicy | None = None
        try:
            for where in policy_domains(domain):
                policy = pick_record(lookups.txt(f"_dmarc.{where}"), where)
                if policy is not None:
                    break
        except dnstxt.DnsTempError:
            outcome.dmarc_error = "temperror"
        outcome.dmarc = evaluate(
            domain,
            policy,
            dkim_pass_domains=[d.domain for d in outcome.dkim if d.result == "pass"],
            spf_pass_domain=outcome.spf_domain if outcome.spf == "pass" else None,
            rng=self._rng,
        )

    # -- the verdict ------------------------------------------------------------------------

    def _verdict(self, outcome: AuthOutcome) -> tuple[Reply | None, str]:
        """(refusal or None, the quarantine mark's text or "")."""
        dmarc = outcome.dmarc
        aligned = dmarc is not None and (dmarc.dkim_aligned or dmarc.spf_aligned)
        own = next((d for d in outcome.from_domains if self._is_org_domain(d)), None)
        if own and self._config.reject_own_domain_spoof and not aligned:
            if outcome.temporary:
                return Reply(
                    451, "4.7.5", f"Cannot authenticate mail from {own} now; try later"
                ), ""
            return (
                Reply(
                    550,
                    "5.7.1",
                    f"Message refused: From {own} is this organisation's domain, "
                    "but the message is not authenticated (no aligned SPF or DKIM pass)",
                ),
                "",
            )
        if dmarc is None or dmarc.result != "fail":
            return None, ""
        mode = self._config.quarantine
        if dmarc.policy is Policy.REJECT or (
            dmarc.policy is Policy.QUARANTINE and mode == "reject"
        ):
            return (
                Reply(
                    550,
                    "5.7.1",
                    f"Message refused: the DMARC policy of {outcome.from_domain} "
                    f"(p={dmarc.published}) rejects it: no aligned SPF or DKIM pass",
                ),
                "",
            )
        if dmarc.policy is Policy.QUARANTINE and mode == "junk":
            return None, f"dmarc=fail (p=quarantine) header.from={outcome.from_domain}"
        return None, ""

    def results_field(self, outcome: AuthOutcome) -> bytes:
        """Our Authentication-Results field (RFC 8601), folded, ending in CRLF."""
        parts = [f"spf={outcome.spf} {outcome.spf_identity}".rstrip()]
        for d in outcome.dkim or [DkimOutcome("none", "", "", "")]:
            text = f"dkim={d.result}"
            if d.domain:
                text += f" header.d={d.domain} header.s={d.selector} header.b={d.b}"
            elif d.b:
                text += f" ({d.b})"
            parts.append(text)
        dmarc = outcome.dmarc
        if dmarc is not None:
            text = f"dmarc={outcome.dmarc_error or dmarc.result}"
            if dmarc.published is not None:
                text += f" (p={dmarc.published} dis={dmarc.policy})"
            parts.append(f"{text} header.from={outcome.from_domain}")
        else:
            parts.append("dmarc=none")
        body = ";\r\n\t".join([self.authserv_id, *parts])
        return f"Authentication-Results: {body}\r\n".encode()


def edge_check_for(
    config: ServerConfig, org_name: str, is_org_domain: Callable[[str], bool]
) -> Callable[[Envelope, Content], Awaitable[Reply | Content]] | None:
    """The server's check (EdgeChecker.check); None when [mailauth] check is off or there is
    no DNS to check with ([dns] nameservers empty: nothing could be authenticated, so nothing
    is judged). The authserv-id defaults to the organisation's name (the same at every site,
    so each trusts the others' results)."""
    if not config.mailauth.check:
        return None
    if not config.dns.servers():
        log.warning("mailauth: no [dns] nameservers, so no SPF/DKIM/DMARC checks at the edge")
        return None
    authserv_id = config.mailauth.authserv_id or (
        "".join(c for c in org_name.lower() if c.isalnum() or c in ".-") or "sitemail"
    )
    checker = EdgeChecker(
        config.mailauth, config.dns.servers(), authserv_id=authserv_id, is_org_domain=is_org_domain
    )
    return checker.check
