"""Central's tables (SQLAlchemy 2 declarative). Alembic migrations create them.

The points ledger is two tables that must always agree: ``points_lots`` (what is left of each
accrual and when it expires) and ``points_entries`` (every signed movement, append-only).
``members.balance`` is their cached sum, updated in the same transaction. Uniqueness does the
idempotency work: a purchase's (shop, idempotency key), an expiry's ``expire:<lot>``, a perk's
coupon id; a retry or a second worker hits the constraint instead of doing it twice.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from central.db.types import Cents, UtcDateTime

# BIGINT ids on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Member(Base):
    __tablename__ = "members"
    # member search (name or phone digits anywhere): trigram GIN indexes on PostgreSQL
    # (pg_trgm, migration 0007), plain indexes on SQLite (the trial store, small)
    __table_args__ = (
        Index("ix_members_name_trgm", "name", postgresql_using="gin",
              postgresql_ops={"name": "gin_trgm_ops"}),
        Index("ix_members_phone_trgm", "phone", postgresql_using="gin",
              postgresql_ops={"phone": "gin_trgm_ops"}),
    )
    member_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    phone: Mapped[str | None] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    tier: Mapped[str] = mapped_column(String(32))
    password_hash: Mapped[str | None] = mapped_column(String(200))
    blocked: Mapped[bool] = mapped_column(Boolean, default=False)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    version: Mapped[int] = mapped_column(BigInteger, default=1)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Plate(Base):
    __tablename__ = "plates"
    __table_args__ = (Index("ix_plates_plate_trgm", "plate", postgresql_using="gin",
                            postgresql_ops={"plate": "gin_trgm_ops"}),)
    plate: Mapped[str] = mapped_column(String(16), primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.member_id"), index=True)
    bound_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PointsLot(Base):
    __tablename__ = "points_lots"
    # the overview's points expiring in 30/60/90 days: an index-only range scan (0007)
    __table_args__ = (Index("ix_points_lots_expiring", "expires_at",
                            postgresql_include=["remaining"],
                            postgresql_where=text("remaining > 0"),
                            sqlite_where=text("remaining > 0")),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    lot_id: Mapped[str] = mapped_column(String(160), unique=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.member_id"), index=True)
    points: Mapped[int] = mapped_column(BigInteger)  # as earned
    remaining: Mapped[int] = mapped_column(BigInteger)
    earned_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    source: Mapped[str] = mapped_column(String(32))


class PointsEntry(Base):
    __tablename__ = "points_entries"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.member_id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # points_earned|points_spent|points_expired|...
    points: Mapped[int] = mapped_column(BigInteger)  # signed effect on the balance
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    lot_id: Mapped[str | None] = mapped_column(String(160))
    ref: Mapped[str | None] = mapped_column(String(200))
    unique_key: Mapped[str | None] = mapped_column(String(200), unique=True)


class Shop(Base):
    __tablename__ = "shops"
    shop_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(32))
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Purchase(Base):
    __tablename__ = "purchases"
    __table_args__ = (UniqueConstraint("shop_id", "idempotency_key",
                                       name="uq_purchases_shop_key"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    shop_id: Mapped[str] = mapped_column(ForeignKey("shops.shop_id"))
    idempotency_key: Mapped[str] = mapped_column(String(128))
    member_id: Mapped[str] = mapped_column(ForeignKey("members.member_id"), index=True)
    amount: Mapped[Decimal] = mapped_column(Cents)
    category: Mapped[str] = mapped_column(String(32))
    brand: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    points: Mapped[int] = mapped_column(BigInteger)
    rules_fired: Mapped[str] = mapped_column(Text, default="[]")
    request_hash: Mapped[str] = mapped_column(String(64))
    lot_id: Mapped[str | None] = mapped_column(String(160))


class Reward(Base):
    __tablename__ = "rewards"
    __table_args__ = (CheckConstraint("stock IS NULL OR stock >= 0", name="stock_not_negative"),)
    reward_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # parking_hours|discount|merchandise|experience
    name: Mapped[str] = mapped_column(String(200))
    points: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[Decimal] = mapped_column(Cents)  # yuan: what the monthly cap counts
    hours: Mapped[int | None] = mapped_column(Integer)  # parking_hours: the coupon's hours
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # migration 0006: JSON list of the tiers that may redeem (NULL: every tier), a category
    # for the pages, and the stock of a physical reward (NULL: unlimited; never below 0)
    tiers: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(32))
    stock: Mapped[int | None] = mapped_column(Integer)


class Redemption(Base):
    __tablename__ = "redemptions"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    redemption_key: Mapped[str] = mapped_column(String(128), unique=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.member_id"), index=True)
    reward_id: Mapped[str] = mapped_column(ForeignKey("rewards.reward_id"))
    points: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[Decimal] = mapped_column(Cents)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    month: Mapped[str] = mapped_column(String(7))  # YYYY-MM in the site's time zone
    coupon_id: Mapped[str | None] = mapped_column(String(160))


class Coupon(Base):
    __tablename__ = "coupons"
    coupon_id: Mapped[str] = mapped_column(String(160), primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.member_id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # hours|amount|free (edge.pricing's kinds)
    value: Mapped[str] = mapped_column(String(32))  # Decimal text: hours or yuan
    valid_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    source: Mapped[str] = mapped_column(String(32))  # perk|redemption
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class StaffUser(Base):
    __tablename__ = "staff_users"
    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))  # marketing|operations|auditor|admin
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class WebSession(Base):
    __tablename__ = "web_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject_kind: Mapped[str] = mapped_column(String(8))  # staff|member
    subject_id: Mapped[str] = mapped_column(String(64))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


class LoginFailure(Base):
    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_key_at", "key", "at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(UtcDateTime)


class OneTimeCode(Base):
    __tablename__ = "one_time_codes"
    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.member_id"), index=True)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class AuditLog(Base):
    """Append-only: the migration adds triggers refusing UPDATE and DELETE on both backends."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(80))  # staff:<name>, cli:<user>, member:<id>
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200))
    before: Mapped[str | None] = mapped_column(Text)
    after: Mapped[str | None] = mapped_column(Text)


class JobRun(Base):
    __tablename__ = "job_runs"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(String(32))
    run_key: Mapped[str] = mapped_column(String(80), unique=True)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    result: Mapped[str | None] = mapped_column(Text)


# ---------------------------------------------------------------- ingest (#13: lanes' ledgers)
# Written by central/ingest; read by the pages (lane_status, lane_entries) and the prepayment
# service (it inserts downlink_outbox rows). Migration 0002.


class Lane(Base):
    """A lane of a site, as configured (``[[ingest.lanes]]``): its roster entry."""

    __tablename__ = "lanes"
    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    lane_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    kind: Mapped[str] = mapped_column(String(8))  # entry|exit
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # who disabled it (staff:<name>): an ingest worker's start leaves such a lane disabled;
    # None when enabled, or disabled only because it left the config (migration 0004)
    disabled_by: Mapped[str | None] = mapped_column(String(80))


class LaneEntry(Base):
    """Every ledger entry a lane sent, exactly as the lane hashed it: ``at`` and
    ``recorded`` are the store's fixed-width UTC text (``2026-11-23T08:00:00.000000+00:00``,
    which sorts as time), ``payload`` its canonical JSON, so a lane's chain can be exported
    and re-verified. (lane_id, seq) and entry_id are unique: that is what makes the lanes'
    at-least-once delivery exactly-once here, whichever worker commits."""

    __tablename__ = "lane_entries"
    __table_args__ = (UniqueConstraint("lane_id", "seq", name="uq_lane_entries_lane_seq"),
                      Index("ix_lane_entries_member_at", "member_id", "at"))
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    lane_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    entry_id: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    at: Mapped[str] = mapped_column(String(40), index=True)
    recorded: Mapped[str] = mapped_column(String(40))
    session_id: Mapped[str | None] = mapped_column(String(128))
    member_id: Mapped[str | None] = mapped_column(String(128))
    plate: Mapped[str | None] = mapped_column(String(32))
    rules_version: Mapped[str | None] = mapped_column(String(128))
    payload: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)


class LaneFlagged(Base):
    """Entries recorded with fields central could not take (docs/sync-protocol.md, Flagged
    entries): why, and the entry exactly as received."""

    __tablename__ = "lane_flagged"
    entry_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    lane_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(300))
    raw: Mapped[str] = mapped_column(Text)


class LaneStatus(Base):
    """The last status a lane published (retained), and whether its backlog is stalled."""

    __tablename__ = "lane_status"
    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    lane_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(8))  # online|offline
    backlog: Mapped[int] = mapped_column(BigInteger, default=0)
    last_acked_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)
    stalled: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class DownlinkOutbox(Base):
    """Messages to the lanes, written in the transaction of the change that causes them and
    published (QoS 1, in id order) by the ingest leader, which then sets ``published_at``.
    ``topic`` is relative to ``parkedge/{site}/``; ``payload`` the full signed message."""

    __tablename__ = "downlink_outbox"
    __table_args__ = (Index("ix_downlink_outbox_pending", "published_at", "id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    site_id: Mapped[str] = mapped_column(String(64))
    topic: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    retain: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    published_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class MemberPublished(Base):
    """The member state version last published (retained) to the lanes: the publisher sends
    every member whose ``members.version`` is past it, with it as ``prev_version``."""

    __tablename__ = "member_published"
    member_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    published_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RulesPublished(Base):
    """Serials of the signed rule bundles published: a new bundle gets the next serial."""

    __tablename__ = "rules_published"
    serial: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    version: Mapped[str] = mapped_column(String(128))
    digest: Mapped[str] = mapped_column(String(64))
    published_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RosterPublished(Base):
    """Serials of the signed lane rosters: the same roster gets the same serial from every
    worker (a wall-clock serial let a worker's snapshot reply outrun the leader's retained
    copy, which the lanes then refused as older). Migration 0008."""

    __tablename__ = "roster_published"
    serial: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))
    published_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Prepayment(Base):
    """A stay paid at central (pay station, member portal) before the car leaves. Sent to
    the site's lanes as a signed, retained ``prepaid`` message through ``downlink_outbox``
    in the same transaction; the exit lane prices and settles it (docs/sync-protocol.md).
    The payment id is the idempotency key: a retried request records it once."""

    __tablename__ = "prepayments"
    payment_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    site_id: Mapped[str] = mapped_column(String(64))
    plate: Mapped[str] = mapped_column(String(32), index=True)
    member_id: Mapped[str | None] = mapped_column(ForeignKey("members.member_id"), index=True)
    amount: Mapped[Decimal] = mapped_column(Cents)
    paid_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    entry_event_id: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(80))  # pay station id or staff:<name>
    digest: Mapped[str] = mapped_column(String(64))  # what was asked: a replay must match
    message: Mapped[str] = mapped_column(Text)  # the signed prepaid message as sent
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    cleared_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # retained copy removed
    refunded_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # migration 0004
    refunded_by: Mapped[str | None] = mapped_column(String(80))
    refund_reason: Mapped[str | None] = mapped_column(String(200))


class Paystation(Base):
    """A pay station that posts prepayments with its own API key (``X-API-Key``): only the
    key's SHA-256 is kept, as for the shops' POS keys. Revoked keys stay (the audit trail
    names them), inactive. Migration 0004."""

    __tablename__ = "paystations"
    paystation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Campaign(Base):
    """A campaign published from the pages or the API (migration 0006). The site's bundle
    sent to the lanes is the configured bundle plus every ``published`` campaign's table
    (``body``, JSON); unpublishing keeps the row (its figures stay) and sends the bundle
    without it."""

    __tablename__ = "campaigns"
    __table_args__ = (UniqueConstraint("site_id", "name", name="uq_campaigns_site_name"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    site_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    budget: Mapped[Decimal | None] = mapped_column(Cents)
    state: Mapped[str] = mapped_column(String(16))  # published|unpublished
    published_by: Mapped[str] = mapped_column(String(80))
    published_at: Mapped[datetime] = mapped_column(UtcDateTime)
    unpublished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    rules_serial: Mapped[int | None] = mapped_column(BigInteger)  # the bundle it went out in
    bundle_version: Mapped[str | None] = mapped_column(String(128))


# ------------------------------------------------------ figure rollups (#14: pages at scale)
# Written only by central/services/rollup.py (the minute job), read by figures.overview with
# the entries past the mark. Days and months are the SITE's (``tz`` in the mark row). 0007.


class FiguresDaily(Base):
    """Sums per site-local day: entries by (kind, their lot's source), purchases
    (``purchase``: key ``points`` or ``base``), redemptions (``redemption``: the reward kind)."""

    __tablename__ = "figures_daily"
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD, site zone
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    points: Mapped[int] = mapped_column(BigInteger, default=0)
    n: Mapped[int] = mapped_column(BigInteger, default=0)
    value_cents: Mapped[int] = mapped_column(BigInteger, default=0)


class MemberDay(Base):
    """Points a member earned on a site-local day; ``visits`` counts the accruals that are
    not manual adjustments (a day with one is a visit)."""

    __tablename__ = "member_days"
    member_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    earned: Mapped[int] = mapped_column(BigInteger, default=0)
    visits: Mapped[int] = mapped_column(BigInteger, default=0)


class MemberMonth(Base):
    """``member_days`` summed per site-local month: the overview's active members and
    visit buckets read these (one row per active member and month)."""

    __tablename__ = "member_months"
    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    earned: Mapped[int] = mapped_column(BigInteger, default=0)
    visit_days: Mapped[int] = mapped_column(BigInteger, default=0)


class RollupMark(Base):
    """How far the rollups go: the last folded id of each source table, and the zone the
    days are in (another zone = the rollups are rebuilt). One row, ``name='figures'``."""

    __tablename__ = "rollup_marks"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    tz: Mapped[str] = mapped_column(String(64))
    entries_id: Mapped[int] = mapped_column(BigInteger, default=0)
    purchases_id: Mapped[int] = mapped_column(BigInteger, default=0)
    redemptions_id: Mapped[int] = mapped_column(BigInteger, default=0)
    folded_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class VisitGroup(Base):
    """Active members of a period (site months ``first``..``last``) by visit bucket (the
    index in figures.VISIT_BUCKETS, -1: earned without a visit) and the points they earned.
    Kept for the periods in ``visit_group_periods`` and moved member by member by each fold,
    so the overview never groups a period's member-months per member."""

    __tablename__ = "visit_groups"
    first: Mapped[str] = mapped_column(String(7), primary_key=True)
    last: Mapped[str] = mapped_column(String(7), primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    members: Mapped[int] = mapped_column(BigInteger, default=0)
    points: Mapped[int] = mapped_column(BigInteger, default=0)


class VisitGroupPeriod(Base):
    """The periods ``visit_groups`` holds (the page's default and those viewed)."""

    __tablename__ = "visit_group_periods"
    first: Mapped[str] = mapped_column(String(7), primary_key=True)
    last: Mapped[str] = mapped_column(String(7), primary_key=True)
    built_at: Mapped[datetime] = mapped_column(UtcDateTime)


class LotExpiryHour(Base):
    """Points outstanding in lots by the UTC hour they expire in (``hour`` = whole hours
    since the epoch), kept by triggers on ``points_lots`` (migration 0009): every change of
    a lot's ``remaining`` or ``expires_at`` adds a signed row, the rollup job merges each
    hour's rows into one (services.rollup.compact_expiry). The overview sums the hours in
    its window instead of scanning the lots; only its two partial hours read lots."""

    __tablename__ = "lot_expiry_hours"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    hour: Mapped[int] = mapped_column(BigInteger, index=True)
    points: Mapped[int] = mapped_column(BigInteger)


class MemberTotal(Base):
    """Members and the points they hold (the sum of the positive balances), kept by
    triggers on ``members`` (migration 0009) as signed rows that sum to the totals; the
    rollup job merges them into one (services.rollup.compact_totals)."""

    __tablename__ = "member_totals"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    members: Mapped[int] = mapped_column(BigInteger)
    outstanding: Mapped[int] = mapped_column(BigInteger)


class MemberSlot(Base):
    """A small integer per member that has a ``member_months`` row: the index of the
    member in ``month_packs`` (given by the fold, in order, never reused)."""

    __tablename__ = "member_slots"
    member_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, unique=True)


class MonthPack(Base):
    """One site month of ``member_months`` packed for the overview's visit groups of a
    period not grouped yet: the month's members as big-endian arrays sorted by slot
    (``slots`` int32, ``visit_days`` int32, ``earned`` int64). Summing a period's packs
    per slot is a few array additions, not a GROUP BY over every member-month; rebuilt by
    the fold for every month it touches (services.rollup)."""

    __tablename__ = "month_packs"
    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    members: Mapped[int] = mapped_column(Integer)
    slots: Mapped[bytes] = mapped_column(LargeBinary)
    visit_days: Mapped[bytes] = mapped_column(LargeBinary)
    earned: Mapped[bytes] = mapped_column(LargeBinary)


# the fold's moves of the members it touched between the kept periods' visit groups: their
# months (the primary key leads with the month: a range of it is every member's)
Index("ix_member_months_member", MemberMonth.member_id, MemberMonth.month)
