"""The metrics: counted from catalogued events, exposed in a form Prometheus parses, and the
Grafana dashboard asks only for metrics the server has."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from sitemail.admin.service import AdminService
from sitemail.core.events import (
    AuthFailed,
    QueueBounced,
    QueueDeferred,
    QueueExpired,
    QueueRelayed,
    SmtpAccepted,
)
from sitemail.web.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[3] / "docs" / "grafana-dashboard.json"


def scraped(
    metrics: Metrics, service: AdminService
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.scrape(service).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_events_by_their_labels(site_a: AdminService) -> None:
    """Each event adds to its counter, labelled by origin, next hop and reason."""
    metrics = Metrics()
    for event in (
        SmtpAccepted("Q1", "192.0.2.1", "a@b.test", 2, 100, ""),
        SmtpAccepted("Q2", "192.0.2.2", "a@b.test", 1, 100, "SiteB"),
        QueueRelayed("Q1", "x@siteb.test", "site SiteB"),
        QueueDeferred("Q1", "y@c.test", "relay 192.0.2.9:25", "4.4.1", 300.0),
        QueueBounced("Q1", "z@d.test", "mx d.test", "5.1.1", "unknown user"),
        QueueExpired("Q3", "w@e.test", "mx e.test"),
        AuthFailed("imap", "192.0.2.3", "failed"),
    ):
        metrics.observe(event)
    found = scraped(metrics, site_a)
    assert found["sitemail_messages_received_total", (("origin", "external"),)] == 1
    assert found["sitemail_recipients_received_total", (("origin", "external"),)] == 2
    assert found["sitemail_messages_received_total", (("origin", "SiteB"),)] == 1
    site = (("nexthop", "SiteB"), ("transport", "site"))
    assert found["sitemail_recipients_delivered_total", site] == 1
    relay = (("nexthop", "192.0.2.9:25"), ("transport", "relay"))
    assert found["sitemail_recipients_deferred_total", relay] == 1
    assert (
        found["sitemail_recipients_bounced_total", (("reason", "5.1.1"), ("transport", "mx"))] == 1
    )
    assert (
        found["sitemail_recipients_bounced_total", (("reason", "4.4.7"), ("transport", "mx"))] == 1
    )
    assert found["sitemail_login_failures_total", (("protocol", "imap"),)] == 1
    assert found["sitemail_queue_messages", ()] == 0


def test_metrics_dashboard_names_only_exposed_metrics(site_a: AdminService) -> None:
    """Every metric docs/grafana-dashboard.json queries is one /metrics exposes."""
    text = Metrics().scrape(site_a).decode()
    exposed = {m.group(1) for m in re.finditer(r"^# TYPE (\w+) (\w+)$", text, re.M)}
    exposed |= {f"{name}_total" for name in exposed}
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    asked = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"sitemail_\w+", target["expr"])
    }
    assert asked
    assert asked <= exposed, asked - exposed
