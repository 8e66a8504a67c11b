"""A TestClient on central's app with staff accounts of each role, for the API tests of
sites, pay stations and refunds (plain helpers; fixtures live in the test files)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from central.services import audit, staff
from central.web import create_app

PW = "correct horse battery"
KEY = Ed25519PrivateKey.generate()
ROLES = {"ops": "operations", "mkt": "marketing", "aud": "auditor", "adm": "admin"}


@contextmanager
def staff_client(c: Any) -> Iterator[TestClient]:
    """The app over ``c`` (signing key set), with users ops/mkt/aud/adm (password PW)."""
    with c.tx() as s:
        for name, role in ROLES.items():
            staff.add_user(s, name, role, PW, c.now)
    app = create_app(c)
    app.state.signing_key = KEY
    with TestClient(app, base_url="https://testserver") as client:
        yield client


def login(client: TestClient, user: str) -> dict[str, str]:
    """Sign in (the cookie stays in the client); returns the CSRF header for writes."""
    r = client.post("/api/staff/login", json={"username": user, "password": PW})
    assert r.status_code == 200, r.text
    return {"X-CSRF-Token": r.json()["csrf_token"]}


def audit_actions(c: Any, prefix: str) -> list[dict[str, Any]]:
    with c.tx() as s:
        return [e for e in audit.entries(s) if e["action"].startswith(prefix)]
