"""Turning one plate read into a lane decision: ledger first, then what to show and do.

This is the only place where the lane touches the ledger and the pricing engine for a
vehicle. Every decision is committed to the ledger before the runner acts on it, and every
exit is idempotent: a replayed plate event (restart, duplicate push, the same car read again)
returns what was already recorded instead of deducting again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal, cast
from zoneinfo import ZoneInfo

import edge.store.prepayments as store_prepaid
from edge.lane import messages
from edge.lane.machine import Decision
from edge.lpr.source import PlateRead
from edge.pricing import (
    Coupon,
    MemberSnapshot,
    PointsLot,
    Quote,
    RuleBundle,
    SessionInput,
    quote_exit,
)
from edge.pricing.types import CouponKind
from edge.store import EntryKind, ExitRecord, ExitResult, MemberView, Session, Store
from edge.store.reader import Reader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LanePolicy:
    lane_id: str
    direction: Literal["entry", "exit"]
    tz: ZoneInfo
    unknown_plate: Literal["hold", "flat_fee"] = "hold"
    uncertain_read: Literal["no_points", "hold"] = "no_points"
    replay_window: timedelta = timedelta(minutes=15)
    reentry_lookback: timedelta = timedelta(days=1)


MatchFn = Callable[[PlateRead, list[str]], tuple[str | None, str, bool]]
"""(read, open plates) -> (plate or None, kind exact|fuzzy|ambiguous|none, spend_points_ok).

Must prefer an exact match: when the read's own plate has an open session the decider
passes only that plate (see ``Decider._look``)."""


@dataclass(frozen=True)
class _ExitLook:
    """What an exit decision read from the ledger (``Decider._look``)."""

    replay: ExitResult | None = None
    plate: str | None = None  # the open plate the read matched
    kind: str = "none"
    spend_ok: bool = False
    session: Session | None = None
    member_id: str | None = None
    view: MemberView | None = None
    previous_exit: datetime | None = None
    #: central prepayments of this stay (pay station, portal): priced and settled here
    prepaid: tuple[store_prepaid.Prepayment, ...] = ()


def exact_match(read: PlateRead, open_plates: list[str]) -> tuple[str | None, str, bool]:
    """Fallback matcher when no plate grammar is configured: exact plates only."""
    if read.plate in open_plates:
        return read.plate, "exact", not read.uncertain
    return None, "none", False


class Decider:
    """Entry and exit decisions for one lane."""

    def __init__(
        self,
        store: Store,
        rules: Callable[[], RuleBundle],
        policy: LanePolicy,
        match: MatchFn = exact_match,
        spend_limit: Callable[[str], int] | None = None,
    ) -> None:
        self.store = store
        self.rules = rules
        self.policy = policy
        self.match = match
        # points this lane may deduct from an account now (the sync's offline allowance);
        # None = no limit beyond the balance (a lane without sync)
        self.spend_limit = spend_limit

    def decide(self, read: PlateRead, now: datetime) -> Decision:
        if self.policy.direction == "entry":
            return self.entry(read, now)
        return self.exit(read, now)

    # ------------------------------------------------------------------ entry
    def entry(self, read: PlateRead, now: datetime) -> Decision:
        rules = self.rules()
        plate = read.plate
        member = self.store.member_for_plate(plate)
        if rules.is_blacklisted(plate):
            self.store.record_lane_event(
                "blacklisted", now, plate=plate, detail={"direction": "entry"}
            )
            lines, speak = messages.entry_refused(plate)
            return Decision("blacklisted", lines, speak, plate=plate)
        session, created = self.store.record_entry(
            plate=plate,
            entered_at=now,
            event_id=read.event_id,
            vehicle_class=vehicle_class_for(read, rules),
            member_id=member.member_id if member else None,
            rules_version=rules.version,
            lane_id=self.policy.lane_id,
            detail={
                "confidence": round(read.confidence, 3),
                "source": read.source,
                "uncertain": read.uncertain,
                "colour": read.colour,
            },
        )
        if member is not None:
            lines, speak = messages.entry_member(plate, self.store.balance(member.member_id, now))
        else:
            lines, speak = messages.entry_visitor(plate)
        # The same read again (after a restart the camera re-sends it): the session exists,
        # nothing new is written here; the machine records the repeat opening before it.
        return Decision(
            "entry_opened" if created else "entry_replayed",
            lines,
            speak,
            open_barrier=True,
            session_id=session.session_id,
            plate=plate,
            detail=() if created else (
                ("entry_event_id", session.entry_event_id or ""),
                ("entered_at", session.entered_at.isoformat()),
                ("read_event_id", read.event_id),
                ("source", read.source),
            ),
        )

    # ------------------------------------------------------------------ exit
    def exit(self, read: PlateRead, now: datetime) -> Decision:
        look = self._look(read, now)
        if look.replay is not None:
            return self._replayed(look.replay, read)
        session, kind = look.session, look.kind
        spend_ok = look.spend_ok
        flags: list[str] = ["fuzzy_match"] if look.plate is not None and kind == "fuzzy" else []
        if kind == "ambiguous":
            self.store.record_lane_event(
                "ambiguous_plate",
                now,
                plate=read.plate,
                detail={"candidates": list(read.candidates)},
            )
            lines, speak = messages.exit_unknown(read.plate)
            return Decision("ambiguous_plate", lines, speak, plate=read.plate)
        if session is None and self.policy.unknown_plate == "hold":
            self.store.record_lane_event("unknown_plate", now, plate=read.plate)
            lines, speak = messages.exit_unknown(read.plate)
            return Decision("unknown_plate", lines, speak, plate=read.plate)

        if read.uncertain:
            flags.append("uncertain_read")
            spend_ok = False
            if self.policy.uncertain_read == "hold":
                self.store.record_lane_event("uncertain_read", now, plate=read.plate)
                lines, speak = messages.exit_unknown(read.plate)
                return Decision("uncertain_read", lines, speak, plate=read.plate)

        rules = self.rules()
        the_plate = session.plate if session else read.plate
        member_id = look.member_id
        snapshot = self._snapshot(look.view) if look.view is not None else None
        quote = quote_exit(
            SessionInput(
                entered=session.entered_at if session else None,
                exited=now,
                vehicle_class=session.vehicle_class if session else "small",
                plate=the_plate,
                lane_id=self.policy.lane_id,
                previous_exit=look.previous_exit,
                paid_at=max((p.paid_at for p in look.prepaid), default=None),
                paid_amount=sum((p.amount for p in look.prepaid), Decimal("0.00")),
            ),
            snapshot,
            rules,
            at=now,
            spend_points=spend_ok,
        )
        result = self.store.record_exit(
            ExitRecord(
                exit_event_id=read.event_id,
                session_id=session.session_id if session else None,
                plate=the_plate,
                exited_at=now,
                member_id=member_id,
                rules_version=quote.rules_version,
                fee=quote.fee,
                payable=quote.payable,
                points_deducted=quote.points_deducted,
                lots_used=tuple(quote.lots_used),
                coupons_used=tuple(quote.coupons_used),
                points_earned=quote.points_earned,
                earned_expires_at=quote.earned_expires_at,
                quote=quote.to_json(),
                flags=tuple(flags) + tuple(quote.flags),
                prepaid=tuple((p.payment_id, p.amount) for p in look.prepaid),
            )
        )
        if result.replayed:
            return self._replayed(result, read)
        return self._exit_decision(the_plate, quote, result, uncertain=not spend_ok)

    def _look(self, read: PlateRead, now: datetime) -> _ExitLook:
        """Everything the exit reads from the ledger, in one read transaction.

        One snapshot instead of six separate store calls: the decision sees one consistent
        state of the file and pays for one BEGIN/COMMIT. Writes (lane events, the exit)
        happen after it, outside the snapshot.
        """
        p = self.policy
        with self.store.snapshot() as r:
            replay = r.last_exit(read.plate, now - p.replay_window)
            # An exact match wins over every look-alike (edge.lpr.matching), so when the
            # read's own plate has an open session the other open plates cannot change the
            # match: the matcher is shown only that plate, and the exit does not read every
            # car inside (O(1), not O(cars parked)).
            exact = r.find_open_session(read.plate)
            if replay is not None and replay.session.status in ("closed", "owed") and (
                    replay.session.exit_lane == p.lane_id) and not (
                    exact is not None and replay.session.exited_at is not None
                    and exact.entered_at >= replay.session.exited_at):
                # the car of that exit read again; a stay that began after it is a new exit
                return _ExitLook(replay=replay)
            plate, kind, spend_ok = self.match(
                read, [exact.plate] if exact is not None else r.open_plates()
            )
            session: Session | None = None
            if plate is not None:
                session = exact if exact is not None and exact.plate == plate else (
                    r.find_open_session(plate))
            look = _ExitLook(plate=plate, kind=kind, spend_ok=spend_ok, session=session)
            if kind == "ambiguous" or (session is None and p.unknown_plate == "hold"):
                return look
            if read.uncertain and p.uncertain_read == "hold":
                return look
            the_plate = session.plate if session else read.plate
            member_id = session.member_id if session and session.member_id else None
            if member_id is None:
                m = r.member_for_plate(the_plate)
                member_id = m.member_id if m else None
            view = r.member_view(member_id, now, p.tz) if member_id else None
            previous = self._previous_exit(r, the_plate, session)
            paid = store_prepaid.for_exit(r.c, session, now) if session is not None else ()
        return replace(look, member_id=member_id, view=view, previous_exit=previous,
                       prepaid=paid)

    def _exit_decision(
        self, plate: str, quote: Quote, result: ExitResult, *, uncertain: bool
    ) -> Decision:
        lines, speak = messages.exit_lines(
            plate, list(quote.display_lines_zh()), quote.payable, uncertain=uncertain
        )
        sid = result.session.session_id
        if "blacklist" in quote.flags:
            return Decision("blacklisted", lines, speak, session_id=sid, plate=plate)
        if quote.payable == 0:
            return Decision(
                "exit_paid", lines, speak, open_barrier=True, session_id=sid, plate=plate
            )
        return Decision("exit_owed", lines, speak, await_payment=True, session_id=sid, plate=plate)

    def _replayed(self, result: ExitResult, read: PlateRead) -> Decision:
        """Show again what was recorded, and open only if nothing is owed."""
        s = result.session
        owed = (s.payable or Decimal(0)) - (s.paid or Decimal(0))
        quote_lines = [
            f"{s.plate}",
            f"费用 {messages.money(s.fee or Decimal(0))}元",
            f"积分抵扣 {s.points_deducted or 0}分",
            f"应付 {messages.money(max(owed, Decimal(0)))}元",
        ]
        lines, speak = messages.exit_lines(
            s.plate, quote_lines, max(owed, Decimal(0)), uncertain=False
        )
        closed = next((e.entry_id for e in result.entries
                       if e.kind == EntryKind.SESSION_CLOSED), "")
        detail = (
            ("exit_event_id", s.exit_event_id or ""),
            ("exited_at", s.exited_at.isoformat() if s.exited_at else ""),
            ("exit_entry_id", closed),
            ("read_event_id", read.event_id),
            ("source", read.source),
        )
        if owed <= 0:
            return Decision("replayed", lines, speak, open_barrier=True,
                            session_id=s.session_id, plate=s.plate, detail=detail)
        return Decision("replayed_owed", lines, speak, await_payment=True,
                        session_id=s.session_id, plate=s.plate, detail=detail)

    def _previous_exit(
        self, r: Reader, plate: str, session: Session | None
    ) -> datetime | None:
        if session is None:
            return None
        prior = r.last_exit(plate, session.entered_at - self.policy.reentry_lookback)
        if prior is None or prior.session.exited_at is None:
            return None
        return prior.session.exited_at if prior.session.exited_at <= session.entered_at else None

    def _snapshot(self, v: MemberView) -> MemberSnapshot:
        member_id = v.member_id
        lots = tuple(PointsLot(x.lot_id, x.points, x.expires_at, x.earned_at) for x in v.lots)
        if self.spend_limit is not None:
            lots = cap_lots(lots, self.spend_limit(member_id))
        coupons = tuple(
            Coupon(x.coupon_id, cast(CouponKind, x.kind), x.value, x.valid_until) for x in v.coupons
        )
        return MemberSnapshot(
            member_id=member_id,
            tier=v.tier,
            lots=lots,
            coupons=coupons,
            redeemed_this_month_value=v.redeemed_this_month_value,
            redeemed_today_points=v.redeemed_today_points,
            earned_today=v.earned_today,
            auto_deduct=v.auto_deduct,
            blocked=v.blocked,
        )


def cap_lots(lots: tuple[PointsLot, ...], limit: int) -> tuple[PointsLot, ...]:
    """Only ``limit`` points are spendable: keep the soonest-expiring ones (the order the
    engine spends them in), so a capped deduction still uses the points closest to expiry."""
    far = datetime.max.replace(tzinfo=UTC)
    out: list[PointsLot] = []
    left = max(0, limit)
    for lot in sorted(lots, key=lambda x: x.expires_at or far):
        if left <= 0:
            break
        take = min(lot.points, left)
        out.append(replace(lot, points=take))
        left -= take
    return tuple(out)


def vehicle_class_for(read: PlateRead, rules: RuleBundle) -> str:
    """The tariff class from the plate: green (8-character) plates are new-energy cars,
    yellow plates large vehicles; anything the bundle has no tariff for is a small car."""
    known = set(rules.vehicle_classes)
    colour = (read.colour or "").lower()
    if (colour == "green" or len(read.plate) == 8) and "new_energy" in known:
        return "new_energy"
    if colour == "yellow" and "large" in known:
        return "large"
    return "small" if "small" in known or not known else sorted(known)[0]
