"""Bad input gets a JSON error with the status of its fault (400/404/409/422), never a 500:
the typed errors of core/errors.py map to HTTP, and validation errors say where."""

from __future__ import annotations

from typing import Any

import pytest
from tests.integration.api.conftest import Api

# (method, path, json body or None, expected status, expected code)
BAD: list[tuple[str, str, Any, int, str]] = [
    ("GET", "/api/recipients/nobody", None, 404, "not_found"),
    ("PATCH", "/api/recipients/nobody", {"display_name": "X"}, 404, "not_found"),
    ("DELETE", "/api/recipients/nobody", None, 404, "not_found"),
    ("GET", "/api/recipients?kind=robot", None, 422, "validation"),
    ("POST", "/api/recipients", {"kind": "mailbox"}, 422, "validation"),
    (
        "POST",
        "/api/recipients",
        {"kind": "mailbox", "alias": "a b", "display_name": "A"},
        422,
        "invalid_value",
    ),
    (
        "POST",
        "/api/recipients",
        {"kind": "contact", "alias": "c", "display_name": "C", "target": "not an address"},
        422,
        "invalid_address",
    ),
    (
        "POST",
        "/api/recipients",
        {"kind": "mailbox", "alias": "m", "display_name": "M", "addresses": ["@@"]},
        422,
        "invalid_address",
    ),
    (
        "POST",
        "/api/recipients",
        {"kind": "mailbox", "alias": "m", "display_name": "M", "unknown": 1},
        422,
        "validation",
    ),
    ("POST", "/api/recipients", "not json", 422, "validation"),
    ("POST", "/api/addressing", {"smtp": "no-at-sign"}, 422, "invalid_value"),
    ("POST", "/api/addressing", {"smtp": "@example.com", "drop_old": True}, 422, "invalid_value"),
    ("POST", "/api/addressing", {"smtp": ""}, 422, "validation"),
    (
        "POST",
        "/api/connected-sites",
        {"site": "SiteB", "routing_address": "x", "cost": 0},
        422,
        "validation",
    ),
    (
        "POST",
        "/api/connected-sites",
        {"site": "Site B!", "routing_address": "siteb.example.com"},
        422,
        "invalid_value",
    ),
    ("DELETE", "/api/connected-sites/SiteZ", None, 404, "not_found"),
    (
        "POST",
        "/api/domain-routes",
        {"domain": "..", "host": "127.10.75.11"},
        422,
        "invalid_address",
    ),
    ("POST", "/api/domain-routes", {"domain": "example.org"}, 422, "validation"),
    ("DELETE", "/api/domain-routes/example.org", None, 404, "not_found"),
    (
        "POST",
        "/api/domains",
        {"domain": "example.org", "internal_relay": True},
        422,
        "invalid_value",
    ),
    ("DELETE", "/api/domains/example.org", None, 404, "not_found"),
    ("GET", "/api/route/explain", None, 422, "validation"),
    ("GET", "/api/route/explain?address=%20", None, 422, "invalid_value"),
    ("GET", "/api/route/explain?address=a@b.test&from=bad%20sender", None, 422, "invalid_value"),
    (
        "POST",
        "/api/replication/connectors",
        {
            "site": "SiteB",
            "bridgehead": "ServerB",
            "routing_address": "siteb.example.com",
            "peer_key": "ed25519:nonsense",
        },
        422,
        "invalid_value",
    ),
    ("DELETE", "/api/replication/connectors/SiteZ", None, 404, "not_found"),
    ("POST", "/api/replication/SiteZ/request-now", None, 404, "not_found"),
    ("POST", "/api/replication/SiteZ/request-now", {"refresh_all": "maybe"}, 422, "validation"),
    ("POST", "/api/replication/pending/SiteZ/accept", {"schedule": ""}, 422, "validation"),
    ("GET", "/api/queue/NOSUCHID", None, 404, "not_found"),
    ("POST", "/api/queue/NOSUCHID/hold", None, 404, "not_found"),
    ("POST", "/api/queue/NOSUCHID/release", None, 404, "not_found"),
    ("POST", "/api/queue/NOSUCHID/retry", None, 404, "not_found"),
    ("DELETE", "/api/queue/NOSUCHID", None, 404, "not_found"),
    ("GET", "/api/track", None, 422, "validation"),
    ("GET", "/api/track?ref=nothing", None, 404, "not_found"),
    ("GET", "/api/track/search", None, 422, "invalid_value"),
    ("GET", "/api/track/search?limit=0&sender=a@b.test", None, 422, "validation"),
    ("POST", "/api/track/ask", None, 422, "validation"),
    ("POST", "/api/track/ask", {"ref": ""}, 422, "validation"),
    ("POST", "/api/track/ask", {"ref": "x@y.test", "extra": 1}, 422, "validation"),
    ("POST", "/api/track/ask", {"ref": "NOSUCHID"}, 404, "not_found"),
    ("POST", "/api/track/ask", {"ref": "   "}, 422, "invalid_value"),
    ("GET", "/api/track/path", None, 422, "validation"),
    ("GET", "/api/track/path?message_id=NOSUCHID", None, 404, "not_found"),
    ("GET", "/api/track/path?message_id=nothing@here.test", None, 404, "not_found"),
    ("GET", "/api/track/path?message_id=a@b.test&token=" + "x" * 33, None, 422, "validation"),
    ("GET", "/api/doctor?timeout=0", None, 422, "validation"),
    ("GET", "/api/doctor?site=Nowhere", None, 404, "not_found"),
    ("GET", "/api/nothing-here", None, 404, "not_found"),
    ("PUT", "/api/sites", None, 405, "method_not_allowed"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    BAD,
    ids=[f"{m} {p} {s}" for m, p, _, s, _ in BAD],
)
def test_api_bad_input_is_a_json_error(
    shared_api: Api, method: str, path: str, body: Any, status: int, code: str
) -> None:
    """A clear message, a stable code and the fault's status; never a 500 or a traceback."""
    api = shared_api
    if isinstance(body, str):
        response = api.client.request(
            method, path, headers=api.auth | {"Content-Type": "application/json"}, content=body
        )
    else:
        response = api.client.request(method, path, headers=api.auth, json=body)
    assert (response.status_code, response.json().get("code")) == (status, code), response.text
    error = response.json()["error"]
    assert error
    assert "Traceback" not in error


def test_api_conflicts_are_409(api: Api) -> None:
    """An alias or a proxy address in use, a second connector to a site: 409 conflict."""
    mailbox = {"kind": "mailbox", "alias": "alice", "display_name": "Alice"}
    assert api.client.post("/api/recipients", headers=api.auth, json=mailbox).status_code == 201
    again = api.client.post("/api/recipients", headers=api.auth, json=mailbox)
    assert (again.status_code, again.json()["code"]) == (409, "conflict")
    taken = api.client.post(
        "/api/recipients",
        headers=api.auth,
        json={
            "kind": "mailbox",
            "alias": "al",
            "display_name": "Al",
            "addresses": ["alice@sitea.example.com"],
        },
    )
    assert taken.status_code == 409
    assert taken.json()["code"] in ("conflict", "duplicate_address")
    route = {"domain": "example.org", "host": "127.10.75.11"}
    assert api.client.post("/api/domain-routes", headers=api.auth, json=route).status_code == 201
    assert api.client.post("/api/domain-routes", headers=api.auth, json=route).status_code == 409


def test_api_broken_setup_is_503_naming_the_file(api: Api) -> None:
    """A broken data dir (the site key gone) is the server's state, not the caller's fault:
    503 with a message naming the file, not a 500."""
    keys = api.service.config.data_dir / "keys"
    (keys / "site-ed25519.pem").rename(keys / "away.pem")
    response = api.client.get("/api/site/key", headers=api.auth)
    assert (response.status_code, response.json()["code"]) == (503, "config")
    assert "site-ed25519.pem" in response.json()["error"]
