"""``parkedge-central`` inside a test's process: its config, database and one ingest
worker (``central.app.Central`` + ``IngestWorker``), with the few calls the lane tests make
(enrol a member with points, a POS sale, a redemption, a new rule bundle) done through
central's own services.

Why in-process: the lane sync tests look at what central counted (``stats``) and wait on
its subscription (``connected``); a subprocess (``central_node.CentralNode``) would hide
both. Nothing here is a central of its own: every commit, ack and signed state comes from
``central.ingest``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from central.app import Central
from central.config import parse_config
from central.db.models import LaneEntry, LaneFlagged, LaneStatus, Member, RosterPublished, Shop
from central.ingest import state
from central.ingest.commit import export_lane
from central.services import members, points, purchases, rewards
from central.services.campaign_publish import lock, site_bundle
from central.services.purchases import PosLimits, PurchaseIn
from edge.sync import codec


def _secret(path: Path, data: bytes) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return str(path)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, datetime | date):
        return v.isoformat()
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)} = {_toml_value(x)}"
                               for k, x in v.items()) + "}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML for {type(v).__name__}")


def bundle_toml(bundle: Mapping[str, Any]) -> str:
    """A rule bundle (as ``tomllib`` read it) written back as TOML, every table inline."""
    return "".join(f"{json.dumps(str(k), ensure_ascii=False)} = {_toml_value(v)}\n"
                   for k, v in bundle.items())


class Reader:
    """What central holds, read back for a test's assertions."""

    def __init__(self, c: Central) -> None:
        self.c = c

    def entry_ids(self, lane: str | None = None) -> list[str]:
        q = select(LaneEntry.entry_id).order_by(LaneEntry.lane_id, LaneEntry.seq)
        if lane is not None:
            q = q.where(LaneEntry.lane_id == lane)
        with self.c.tx() as s:
            return list(s.scalars(q))

    def count_entries(self) -> int:
        with self.c.tx() as s:
            return int(s.scalar(select(func.count()).select_from(LaneEntry)) or 0)

    def balance(self, member_id: str) -> int | None:
        with self.c.tx() as s:
            m = s.get(Member, member_id)
            return None if m is None else int(m.balance)

    def flagged(self, lane: str | None = None) -> list[dict[str, Any]]:
        q = select(LaneFlagged)
        if lane is not None:
            q = q.where(LaneFlagged.lane_id == lane)
        with self.c.tx() as s:
            return [{k: getattr(r, k) for k in r.__table__.columns.keys()}  # noqa: SIM118
                    for r in s.scalars(q)]

    def export_lane(self, lane: str) -> list[dict[str, Any]]:
        with self.c.tx() as s:
            return list(export_lane(s, lane))

    def points_from_entries(self, member_id: str) -> int:
        """The sum of the member's points entries (its balance, if all is well)."""
        with self.c.tx() as s:
            return points.ledger_sums(s, member_id)[1]

    def member_state(self, member_id: str, applied: Mapping[str, int], allowance: int
                     ) -> codec.MemberState | None:
        """The state central would sign for the lanes."""
        with self.c.tx() as s:
            return state.member_state(s, member_id, applied, allowance)


class InProcessCentral:
    """``start()`` / ``stop()`` one ingest worker of a site's central on ``db_url``."""

    def __init__(self, workdir: Path, *, port: int, site: str, lane_keys: Mapping[str, bytes],
                 rules: Path, db_url: str | None = None,
                 signing_key: Ed25519PrivateKey | None = None, allowance: int = 100,
                 client_id: str = "central", rules_bundle: Mapping[str, Any] | None = None,
                 tls: tuple[str, str | None, str | None] | None = None,
                 username: str | None = None, password: str | None = None,
                 stall_alert_s: float = 300.0, lane_kinds: Mapping[str, str] | None = None,
                 timezone: str = "Asia/Shanghai", share_group: str = "central") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.site = site
        self.signing_key = signing_key or Ed25519PrivateKey.generate()
        pem = self.signing_key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption())
        keys = workdir / "lane-keys"
        keys.mkdir(exist_ok=True)
        for lane, k in lane_keys.items():
            _secret(keys / f"{lane}.key", k)
        self.rules_file = workdir / "rules.toml"
        if rules_bundle is not None:
            self.rules_file.write_text(bundle_toml(rules_bundle), encoding="utf-8")
        else:
            self.rules_file.write_bytes(rules.read_bytes())
        kinds = lane_kinds or {}
        mqtt: dict[str, Any] = {"broker": f"127.0.0.1:{port}", "keepalive_s": 5,
                                "client_id": client_id}
        if username is not None:
            mqtt["username"] = username
        if password is not None:
            mqtt["password"] = {"file": _secret(workdir / "mqtt.pw", password.encode())}
        if tls is not None:
            mqtt["ca_file"] = tls[0]
            if tls[1]:
                mqtt["cert_file"] = tls[1]
            if tls[2]:
                mqtt["key_file"] = tls[2]
        cfg = parse_config({
            "site": {"site_id": site, "timezone": timezone},
            "database": {"url": db_url or f"sqlite:///{workdir / 'central.db'}"},
            "rules": {"bundle": str(self.rules_file)},
            "pos": {"max_age_days": 400},
            "jobs": {"enabled": False},
            "mqtt": mqtt,
            "ingest": {"signing_key": {"file": _secret(workdir / "signing.pem", pem)},
                       "keys_dir": str(keys), "allowance": allowance,
                       "publish_interval_s": 0.1, "stall_alert_s": stall_alert_s,
                       "share_group": share_group,
                       "lanes": [{"id": lane, "kind": kinds.get(lane, "exit" if "x" in
                                                                 lane.lower() else "entry")}
                                 for lane in lane_keys]}})
        self.central = Central.from_config(cfg, migrate=True)
        self.worker = self.central.ingest_worker(client_id)
        self.db = Reader(self.central)
        self.connected = self.worker.connected
        self.stats = self.worker.stats

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop()
        self.central.close()

    @contextmanager
    def tx(self) -> Iterator[Session]:
        with self.central.tx() as s:
            yield s

    # ---------------------------------------------------------------- what the lanes see
    @property
    def lane_status(self) -> dict[str, dict[str, Any]]:
        with self.tx() as s:
            return {r.lane_id: {"lane": r.lane_id, "state": r.state, "backlog": r.backlog,
                                "last_acked_seq": r.last_acked_seq,
                                "backlog_stalled": bool(r.stalled)}
                    for r in s.scalars(select(LaneStatus).where(LaneStatus.site_id ==
                                                                self.site))}

    def stalled_lanes(self) -> list[str]:
        return sorted(lane for lane, st in self.lane_status.items() if st["backlog_stalled"])

    def applied(self) -> dict[str, int]:
        return self.worker.applied()

    # ---------------------------------------------------------------- the programme
    def add_member(self, member_id: str, *, tier: str = "member", name: str | None = None,
                   balance: int = 0, plates: tuple[str, ...] = (), when: datetime | None = None
                   ) -> None:
        """Enrol a member with its plates and ``balance`` points in one lot."""
        now = when or self.central.clock()
        with self.tx() as s:
            m = members.enrol(s, self.central.rules, member_id=member_id, phone=None,
                              name=name or "", tier=tier, now=now, plates=plates)
            if balance:
                points.accrue(s, self.central.rules, m, balance, now,
                              lot_id=f"opening-{member_id}", source="adjustment",
                              ref="opening balance")

    def adjust(self, member_id: str, delta: int, ref: str, when: datetime | None = None
               ) -> None:
        """A staff correction: +points as a new lot, -points spent from the lots."""
        with self.tx() as s:
            points.adjust(s, self.central.rules, member_id, delta,
                          when or self.central.clock(), reason="test", ref=ref)

    def settle(self, member_id: str, points_: int) -> None:
        """Points paid in to clear an overdraft (a staff correction)."""
        with self.tx() as s:
            n = s.scalar(select(func.count()).select_from(Member)) or 0
            points.adjust(s, self.central.rules, member_id, points_, self.central.clock(),
                          reason="overdraft settled", ref=f"settle-{member_id}-{n}-{points_}")

    def purchase(self, purchase_id: str, member_id: str, amount: Decimal, category: str,
                 when: datetime, *, brand: str | None = None) -> int:
        """A POS sale at a shop of ``category`` (registered on first use). Idempotent."""
        shop_id = f"shop-{category}"
        with self.tx() as s:
            shop = s.get(Shop, shop_id)
            if shop is None:
                purchases.add_shop(s, shop_id, shop_id, category)
                s.flush()
                shop = s.get(Shop, shop_id)
            r = purchases.record_purchase(
                s, self.central.rules, PurchaseIn(shop_id, purchase_id, member_id, amount,
                                                  when, brand),
                self.central.clock(), shop=shop, limits=PosLimits(400, 10, Decimal(10**6)))
        return r.points

    def add_reward(self, reward_id: str, kind: str, name: str, points_: int,
                   value: Decimal, hours: int | None = None) -> None:
        with self.tx() as s:
            rewards.put_reward(s, reward_id=reward_id, kind=kind, name=name, points=points_,
                               value=value, hours=hours)

    def redeem(self, redemption_id: str, member_id: str, reward_id: str, when: datetime
               ) -> Any:
        with self.tx() as s:
            return rewards.redeem(s, self.central.rules, member_id=member_id,
                                  reward_id=reward_id, redemption_key=redemption_id, now=when)

    @property
    def roster_serial(self) -> int:
        """The serial of the roster as central last recorded it (0: none yet)."""
        with self.tx() as s:
            return int(s.scalar(select(func.coalesce(func.max(RosterPublished.serial), 0)))
                       or 0)

    def publish_rules(self, bundle: Mapping[str, Any]) -> int:
        """A new rule bundle for the site: written where central's config points, its serial
        recorded, then the worker publishes it (signed) as it does at every reconnect."""
        self.rules_file.write_text(bundle_toml(bundle), encoding="utf-8")
        with self.tx() as s:  # as the worker numbers it: with the published campaigns
            lock(s)
            serial = state.rules_serial(s, site_bundle(s, self.site,
                                                       state.bundle_json(self.rules_file)),
                                        self.central.clock())
        self.worker._reconnected.set()  # the reconnect path republishes roster and rules
        return serial
