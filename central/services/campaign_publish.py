"""Publishing and unpublishing campaigns: the site's bundle is the configured bundle plus
every published campaign, validated by ``edge.pricing``, signed and queued for the lanes.

Why the outbox: the campaign row, the bundle's serial (``rules_published``) and the signed,
retained ``rules`` message are written in one transaction, so a campaign is never recorded
as published without its message to the lanes, nor a bundle sent for a rolled-back publish.
The ingest leader publishes the row; at every (re)connect it republishes the same bundle
(``site_bundle``), so a new leader keeps the campaigns. Lanes refuse a lower serial: a
published bundle always gets the next one.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from central.db.models import Campaign, DownlinkOutbox
from central.ingest import state
from central.services import audit
from central.services.errors import Invalid, NotFound, Refused
from edge.pricing import RuleBundle
from edge.pricing.bundle import BundleError, parse_bundle
from edge.sync import codec

#: PostgreSQL transaction lock serialising publishes of a site ("campaign" in ASCII).
PUBLISH_LOCK = 0x63616D706169676E
VERSION_MAX = 64  # edge.pricing's schema


@dataclass(frozen=True)
class Published:
    name: str
    serial: int
    bundle_version: str


def published_rows(s: Session, site: str) -> list[Campaign]:
    return list(s.scalars(select(Campaign).where(Campaign.site_id == site,
                                                 Campaign.state == "published")
                          .order_by(Campaign.id)))


def site_bundle(s: Session, site: str, base: dict[str, Any]) -> dict[str, Any]:
    """``base`` (the configured bundle, JSON-ready) plus the published campaigns, with a
    version naming them (a digest: the lanes refuse another bundle under the same serial
    and version, and every quote says which bundle priced it)."""
    rows = published_rows(s, site)
    if not rows:
        return base
    data = copy.deepcopy(base)
    data["campaigns"] = list(data.get("campaigns", [])) + [json.loads(r.body) for r in rows]
    digest = hashlib.sha256(codec.canonical(data["campaigns"])).hexdigest()[:10]
    data["version"] = f"{str(base.get('version', 'bundle'))[:VERSION_MAX - 12]}+c{digest}"
    return data


def site_rules(s: Session, site: str, base: dict[str, Any]) -> RuleBundle:
    """The rule bundle the lanes run now (for forecasts and figures)."""
    return parse_bundle(site_bundle(s, site, base))


_parsed: dict[tuple[str, str], RuleBundle] = {}


def current_rules(s: Session, site: str, path: Path, configured: RuleBundle) -> RuleBundle:
    """What central earns purchases with: ``configured`` while nothing is published here,
    else the site's bundle, parsed once per content (a cache keyed by the bundle's digest,
    so every worker agrees whichever of them published)."""
    if not published_rows(s, site):
        return configured
    bundle = site_bundle(s, site, state.bundle_json(path))
    key = (site, hashlib.sha256(codec.canonical(bundle)).hexdigest())
    got = _parsed.get(key)
    if got is None:
        if len(_parsed) >= 16:
            _parsed.clear()
        got = _parsed[key] = parse_bundle(bundle)
    return got


def lock(s: Session) -> None:
    """Serialise whatever gives a bundle its serial (publishes, the leader's republish)."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PUBLISH_LOCK})


def _send(s: Session, site: str, base: dict[str, Any], key: Ed25519PrivateKey,
          now: datetime) -> tuple[int, str]:
    """Validate the site's bundle as it now stands and queue it signed for the lanes."""
    bundle = site_bundle(s, site, base)
    try:
        parse_bundle(bundle)
    except BundleError as exc:
        path, reason = exc.errors[0] if exc.errors else ("campaigns", str(exc))
        raise Invalid("name", f"{path}: {reason}") from None
    serial = state.rules_serial(s, bundle, now)
    s.add(DownlinkOutbox(site_id=site, topic="rules", retain=True, created_at=now,
                         payload=codec.sign_rules(bundle, serial, key, site).decode("utf-8")))
    return serial, str(bundle.get("version", ""))


def publish(s: Session, *, site: str, base: dict[str, Any], key: Ed25519PrivateKey,
            campaign: dict[str, Any], budget: Decimal | None, actor: str,
            now: datetime) -> Published:
    """Record ``campaign`` (a ``[[campaigns]]`` table already checked by ``read_form``) as
    published and queue the new bundle, audited. A published name is refused (409); an
    unpublished one is published again with the new table."""
    lock(s)
    name = str(campaign.get("name", ""))
    if not name:
        raise Invalid("name", "required")
    if any(c.get("name") == name for c in base.get("campaigns", [])):
        raise Refused("name", f"{name!r} is in the configured bundle")
    row = s.scalar(select(Campaign).where(Campaign.site_id == site, Campaign.name == name)
                   .with_for_update())
    before = None
    if row is not None:
        if row.state == "published":
            raise Refused("name", f"a campaign named {name!r} is published")
        before = campaign_json(row)
    else:
        row = Campaign(site_id=site, name=name)
        s.add(row)
    row.body = json.dumps(campaign, ensure_ascii=False, sort_keys=True)
    row.budget, row.state, row.published_by = budget, "published", actor
    row.published_at, row.unpublished_at = now, None
    s.flush()
    serial, version = _send(s, site, base, key, now)
    row.rules_serial, row.bundle_version = serial, version
    audit.record(s, actor=actor, action="campaign.publish", target=f"campaign:{name}", at=now,
                 before=before, after={**campaign_json(row), "sent_to_lanes": True})
    return Published(name, serial, version)


def unpublish(s: Session, *, site: str, base: dict[str, Any], key: Ed25519PrivateKey,
              name: str, actor: str, now: datetime) -> Published:
    """Take a published campaign out of the site's bundle and queue the bundle, audited."""
    lock(s)
    row = s.scalar(select(Campaign).where(Campaign.site_id == site, Campaign.name == name)
                   .with_for_update())
    if row is None:
        raise NotFound("name", f"unknown campaign {name!r}")
    if row.state != "published":
        raise Refused("name", f"{name!r} is not published")
    before = campaign_json(row)
    row.state, row.unpublished_at = "unpublished", now
    s.flush()
    serial, version = _send(s, site, base, key, now)
    audit.record(s, actor=actor, action="campaign.unpublish", target=f"campaign:{name}",
                 at=now, before=before, after={**campaign_json(row), "rules_serial": serial,
                                               "bundle_version": version})
    return Published(name, serial, version)


def sent_bundle(s: Session, site: str, serial: int) -> dict[str, Any] | None:
    """The bundle exactly as it was signed under ``serial`` (from the outbox), if kept."""
    for row in s.scalars(select(DownlinkOutbox).where(DownlinkOutbox.site_id == site,
                                                      DownlinkOutbox.topic == "rules")
                         .order_by(DownlinkOutbox.id.desc())):
        msg = json.loads(row.payload)
        if msg.get("serial") == serial and isinstance(msg.get("bundle"), dict):
            return dict(msg["bundle"])
    return None


def campaign_json(r: Campaign) -> dict[str, Any]:
    return {"name": r.name, "campaign": json.loads(r.body), "state": r.state,
            "budget": None if r.budget is None else str(r.budget),
            "published_by": r.published_by, "published_at": r.published_at.isoformat(),
            "unpublished_at": None if r.unpublished_at is None
            else r.unpublished_at.isoformat(),
            "rules_serial": r.rules_serial, "bundle_version": r.bundle_version}
