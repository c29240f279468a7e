"""Every route of the admin API does what the CLI command of the same name does, through the
same AdminService: request/response cases in FastAPI's TestClient."""

from __future__ import annotations

from typing import Any

from tests.integration.api.conftest import Api

from sitemail.directory import ObjectKind


def call(api: Api, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
    response = api.client.request(method, path, headers=api.auth, **kwargs)
    assert response.status_code == expect, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def test_api_sites_shows_the_organisation_as_known_here(api: Api) -> None:
    """GET /api/sites: organisation, this site and server, addressing, the sites known."""
    body = call(api, "GET", "/api/sites")
    assert body["organization"] == "ExchangeORG"
    assert (body["site"], body["server"]) == ("SiteA", "ServerA")
    assert body["addressing"] == "%m@sitea.example.com"
    assert [(s["name"], s["is_local"], s["servers"]) for s in body["sites"]] == [
        ("SiteA", True, ["ServerA"])
    ]


def test_api_site_key_is_the_cli_key(api: Api) -> None:
    """GET /api/site/key: the key `sitemail site key` prints, its fingerprint, the TLS pin."""
    body = call(api, "GET", "/api/site/key")
    assert (body["public_key"], body["fingerprint"]) == api.service.site_key()
    assert len(body["tls_fingerprint"]) == 64


def test_api_recipients_add_list_get_update_remove(api: Api) -> None:
    """Mailboxes, contacts and groups: add, list (by kind), get, update, remove."""
    alice = call(
        api,
        "POST",
        "/api/recipients",
        201,
        json={"kind": "mailbox", "alias": "alice", "display_name": "Alice", "password": "s3cret"},
    )
    assert alice["primary_address"] == "alice@sitea.example.com"
    assert alice["read_only"] is False
    assert "password" not in alice
    call(
        api,
        "POST",
        "/api/recipients",
        201,
        json={"kind": "contact", "alias": "ext", "display_name": "Ext", "target": "x@other.test"},
    )
    group = call(
        api,
        "POST",
        "/api/recipients",
        201,
        json={"kind": "group", "alias": "team", "display_name": "Team", "members": ["alice"]},
    )
    assert group["members"] == ["alice"]
    assert [r["alias"] for r in call(api, "GET", "/api/recipients")] == ["alice", "ext", "team"]
    assert [r["alias"] for r in call(api, "GET", "/api/recipients?kind=contact")] == ["ext"]
    assert call(api, "GET", "/api/recipients/ext")["target"] == "x@other.test"
    assert call(api, "GET", "/api/recipients/alice@sitea.example.com")["alias"] == "alice"

    changed = call(
        api,
        "PATCH",
        "/api/recipients/alice",
        json={"display_name": "Alice Smith", "add_addresses": ["a.smith@sitea.example.com"]},
    )
    assert changed["display_name"] == "Alice Smith"
    assert "smtp:a.smith@sitea.example.com" in changed["proxies"]
    team = call(api, "PATCH", "/api/recipients/team", json={"remove_members": ["alice"]})
    assert team["members"] == []
    assert api.service.get_recipient("alice").display_name == "Alice Smith"

    removed = call(api, "DELETE", "/api/recipients/ext")
    assert removed["alias"] == "ext"
    call(api, "GET", "/api/recipients/ext", 404)


def test_api_addressing_dry_run_shows_the_diff_and_changes_nothing(api: Api) -> None:
    """POST /api/addressing with dry_run: the diff of primaries; the template stays."""
    api.service.add_recipient(ObjectKind.MAILBOX, "bob", display_name="Bob")
    assert call(api, "GET", "/api/addressing") == {"site": "SiteA", "smtp": "%m@sitea.example.com"}
    body = call(
        api,
        "POST",
        "/api/addressing",
        json={"smtp": "@example.com", "update_recipients": True, "dry_run": True},
    )
    assert body["changes"] == [
        {"alias": "bob", "old": "bob@sitea.example.com", "new": "bob@example.com"}
    ]
    assert body["recipients_updated"] is False
    assert api.service.addressing() == "%m@sitea.example.com"

    done = call(
        api, "POST", "/api/addressing", json={"smtp": "@example.com", "update_recipients": True}
    )
    assert (done["updated"], done["recipients_updated"]) == (1, True)
    assert api.service.get_recipient("bob").primary_smtp == "bob@example.com"


def test_api_connected_sites_domain_routes_and_domains(api: Api) -> None:
    """The IMS's Connected Sites, E-Mail Domain routes and accepted domains: add, list, remove;
    the routing table and route explain see them."""
    site = call(
        api,
        "POST",
        "/api/connected-sites",
        201,
        json={"site": "SiteB", "routing_address": "siteb.example.com", "cost": 2},
    )
    assert (site["site"], site["cost"], site["known"]) == ("SiteB", 2, False)
    assert [s["site"] for s in call(api, "GET", "/api/connected-sites")] == ["SiteB"]
    assert call(api, "GET", "/api/connected-sites?all=true")[0]["owner"] == "SiteA"
    changed = call(api, "PATCH", "/api/connected-sites/SiteB", json={"cost": 4})
    assert (changed["routing_address"], changed["cost"]) == ("siteb.example.com", 4)
    call(api, "PATCH", "/api/connected-sites/SiteZ", 404, json={"cost": 4})
    call(api, "PATCH", "/api/connected-sites/SiteB", 422, json={"cost": 101})
    call(api, "PATCH", "/api/connected-sites/SiteB", 422, json={"tls_fingerprint": "abc"})

    route = call(
        api,
        "POST",
        "/api/domain-routes",
        201,
        json={"domain": "siteb.example.com", "host": "127.10.75.11:2525"},
    )
    assert (route["domain"], route["host"]) == ("siteb.example.com", "127.10.75.11:2525")
    assert call(api, "GET", "/api/domain-routes") == [route]

    domain = call(api, "POST", "/api/domains", 201, json={"domain": "example.com"})
    assert (domain["domain"], domain["owner"]) == ("example.com", "SiteA")
    assert [d["domain"] for d in call(api, "GET", "/api/domains")] == ["example.com"]

    table = call(api, "GET", "/api/routing/table")
    assert table["site"] == "SiteA"
    assert {"domain": "siteb.example.com", "host": "127.10.75.11:2525"} in table["domain_routes"]
    assert "example.com" in table["accepted_domains"]
    explained = call(api, "GET", "/api/route/explain", params={"address": "x@siteb.example.com"})
    assert (explained["transport"], explained["nexthop"]) == ("relay", "127.10.75.11:2525")
    assert explained["steps"]
    unknown = call(
        api, "GET", "/api/route/explain", params={"address": "nobody@example.com", "from": "<>"}
    )
    assert unknown["transport"] == "reject"
    assert "null sender" in unknown["sender"]

    call(api, "DELETE", "/api/domains/example.com")
    call(api, "DELETE", "/api/domain-routes/siteb.example.com")
    call(api, "DELETE", "/api/connected-sites/SiteB")
    assert call(api, "GET", "/api/domains") == []
    assert call(api, "GET", "/api/domain-routes") == []
    assert call(api, "GET", "/api/connected-sites") == []


def add_connector(api: Api) -> dict[str, Any]:
    return call(
        api,
        "POST",
        "/api/replication/connectors",
        201,
        json={
            "site": "SiteB",
            "bridgehead": "ServerB",
            "routing_address": "siteb.example.com",
            "peer_key": api.peer.site_key()[0],
            "schedule": "never",
        },
    )


def test_api_replication_connectors_request_now_status_kcc(api: Api) -> None:
    """Connectors (add, list, remove), Request Now (queues a request and wakes the queue),
    status, pending partners and the KCC's Check Now."""
    connector = add_connector(api)
    assert (connector["site"], connector["fingerprint"]) == ("SiteB", api.peer.site_key()[1])
    assert [c["site"] for c in call(api, "GET", "/api/replication/connectors")] == ["SiteB"]
    changed = call(api, "PATCH", "/api/replication/connectors/SiteB", json={"schedule": "15"})
    assert (changed["schedule"], changed["peer_key"]) == ("15", connector["peer_key"])
    call(api, "PATCH", "/api/replication/connectors/SiteB", 422, json={"schedule": "often"})
    call(api, "PATCH", "/api/replication/connectors/SiteB", 422, json={"peer_key": "x"})
    call(api, "PATCH", "/api/replication/connectors/SiteZ", 404, json={"schedule": "15"})

    api.wakes.clear()
    outcome = call(api, "POST", "/api/replication/SiteB/request-now", json={"refresh_all": True})
    assert (outcome["peer"], outcome["sent"]) == ("SiteB", True)
    assert api.wakes, "the queue was not woken"
    again = call(api, "POST", "/api/replication/SiteB/request-now")  # no body: new and modified
    assert again["sent"] is False  # the first is still unanswered
    assert "waiting" in again["detail"] or "still" in again["detail"]

    status = call(api, "GET", "/api/replication/status")
    assert status["site"] == "SiteA"
    assert [(p["peer"], p["connector"], p["waiting"]) for p in status["peers"]] == [
        ("SiteB", True, True)
    ]
    assert call(api, "GET", "/api/replication/pending") == []

    kcc = call(api, "POST", "/api/kcc/check-now")
    assert kcc["site"] == "SiteA"
    assert [(c["owner"], c["site"]) for c in kcc["connectors"]] == [("SiteA", "SiteB")]
    assert any(w["code"] for w in kcc["warnings"])  # SiteB is not known here yet

    assert call(api, "DELETE", "/api/replication/connectors/SiteB")["site"] == "SiteB"
    assert call(api, "GET", "/api/replication/connectors") == []


def test_api_pending_partners_unknown_site_is_404(api: Api) -> None:
    """Accepting or rejecting a site that sent no request: 404 with a JSON error."""
    for action in ("accept", "reject"):
        body = call(api, "POST", f"/api/replication/pending/SiteC/{action}", 404)
        assert body["code"] == "not_found"
        assert "SiteC" in body["error"]


def test_api_queue_list_show_hold_release_retry_delete_and_track(api: Api) -> None:
    """The queue: a replication request waits in it (no server runs); every operation on it,
    and its tracking events by queue id and by Message-ID."""
    add_connector(api)
    call(api, "POST", "/api/replication/SiteB/request-now")
    [entry] = call(api, "GET", "/api/queue")
    queue_id = entry["queue_id"]
    assert entry["recipients"][0]["address"].lower().endswith("@siteb.example.com")

    shown = call(api, "GET", f"/api/queue/{queue_id.lower()}")
    assert shown["queue_id"] == queue_id
    assert "Message-ID" in shown["headers"] or "Message-Id" in shown["headers"]

    assert call(api, "POST", f"/api/queue/{queue_id}/hold")["held"] is True
    api.wakes.clear()
    assert call(api, "POST", f"/api/queue/{queue_id}/release")["held"] is False
    assert api.wakes
    assert call(api, "POST", f"/api/queue/{queue_id}/retry")["due_now"] == 1
    assert call(api, "POST", "/api/queue/retry")["due_now"] == 1

    events = call(api, "GET", "/api/track", params={"ref": queue_id})
    assert [e["event"] for e in events][-2:] == ["held", "released"]
    by_message_id = call(api, "GET", "/api/track", params={"ref": entry["message_id"]})
    assert by_message_id == events
    found = call(
        api, "GET", "/api/track/search", params={"recipient": "SITEMAIL-DSA@siteb.example.com"}
    )
    assert found
    assert {e["queue_id"] for e in found} == {queue_id}
    assert found[0]["at"] >= found[-1]["at"]  # newest first
    assert call(api, "GET", "/api/track/search", params={"sender": "nobody@x.test"}) == []

    assert call(api, "DELETE", f"/api/queue/{queue_id}")["queue_id"] == queue_id
    assert call(api, "GET", "/api/queue") == []
    call(api, "GET", f"/api/queue/{queue_id}", 404)
    assert call(api, "GET", "/api/track", params={"ref": queue_id})[-1]["event"] == "deleted"


def test_api_track_ask_and_path_across_sites(api: Api) -> None:
    """POST /api/track/ask queues a signed track-query to every site this site can address
    and verify (SiteB, through its connector; no server runs, so it waits in the queue);
    GET /api/track/path shows this site's events and SiteB as pending."""
    alone = call(api, "POST", "/api/track/ask", json={"ref": "<m1@outside.test>"})
    assert (alone["message_id"], alone["asked"], alone["skipped"]) == ("<m1@outside.test>", [], [])
    assert not api.wakes  # nothing was queued
    add_connector(api)
    call(api, "POST", "/api/replication/SiteB/request-now")
    [request] = call(api, "GET", "/api/queue")
    api.wakes.clear()
    asked = call(api, "POST", "/api/track/ask", json={"ref": request["queue_id"].lower()})
    assert asked["message_id"] == request["message_id"]
    assert (asked["asked"], asked["skipped"], len(asked["token"])) == (["SiteB"], [], 32)
    assert api.wakes
    queued = [e for e in call(api, "GET", "/api/queue") if e["queue_id"] != request["queue_id"]]
    assert [e["recipients"][0]["address"] for e in queued] == ["sitemail-dsa@siteb.example.com"]

    path = call(api, "GET", "/api/track/path", params={"message_id": request["message_id"]})
    assert (path["token"], path["local_site"]) == (asked["token"], "SiteA")
    assert (path["answered"], path["pending"]) == ([], ["SiteB"])
    assert path["sites"] == [
        {"site": "SiteB", "answered": False, "answered_at": None, "events": 0, "truncated": False}
    ]
    assert {e["site"] for e in path["events"]} == {"SiteA"}
    assert [e["event"] for e in path["events"]][:1] == ["received"]
    by_token = call(
        api,
        "GET",
        "/api/track/path",
        params={"message_id": request["queue_id"], "token": alone["token"]},
        expect=404,
    )
    assert by_token["code"] == "not_found"  # that query was for another message


def test_api_doctor_reports_findings(api: Api) -> None:
    """GET /api/doctor: the doctor's findings, each with a level; --site of an unknown site 404."""
    findings = call(api, "GET", "/api/doctor", params={"timeout": 1})
    assert findings
    assert {f["level"] for f in findings} <= {"ok", "warning", "error"}
    assert call(api, "GET", "/api/doctor", 404, params={"site": "Nowhere"})["code"] == "not_found"
