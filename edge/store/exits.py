"""The exit and what can follow it: payment, reversal, replay. Runs inside one transaction.

``record_exit`` is the money path: it validates everything, then writes the session change,
the ledger entries, the lot and coupon changes and an idempotency key together, so a replayed
event (restart, duplicate read, duplicate push) finds the key, or the closed session, and
gets the stored result back instead of a second deduction.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from edge.store import checks, ledger, members, prepayments, sessions
from edge.store.codec import ts, ts_opt
from edge.store.engine import Db
from edge.store.ledger import Draft
from edge.store.tx import Tx
from edge.store.types import (
    EntryKind,
    ExitRecord,
    ExitResult,
    LedgerEntry,
    Member,
    StoreError,
)


def record_exit(tx: Tx, rec: ExitRecord) -> ExitResult:
    """Close the stay, charge, deduct, earn: all or nothing, and at most once."""
    checks.nonempty(rec.exit_event_id, "exit_event_id")
    checks.nonempty(rec.plate, "plate")
    at_s = ts(rec.exited_at, "exited_at")
    fee = checks.amount(rec.fee, "fee")
    payable = checks.amount(rec.payable, "payable")
    deducted = checks.points(rec.points_deducted, "points_deducted")
    earned = checks.points(rec.points_earned, "points_earned")
    lots: dict[str, int] = {}
    for i, item in enumerate(rec.lots_used):
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise StoreError(f"lots_used[{i}]: expected (lot_id, points)")
        lots[checks.nonempty(item[0], f"lots_used[{i}].lot_id")] = (
            lots.get(item[0], 0) + checks.points(item[1], f"lots_used[{i}].points"))
    if sum(lots.values()) != deducted:
        raise StoreError(f"lots_used: sum {sum(lots.values())} != points_deducted {deducted}")
    if len(set(rec.coupons_used)) != len(rec.coupons_used):
        raise StoreError("coupons_used: a coupon is listed twice")
    if (deducted or earned or rec.coupons_used) and not rec.member_id:
        raise StoreError("member_id: required when points or coupons move")
    ts_opt(rec.earned_expires_at, "earned_expires_at")
    if not isinstance(rec.quote, dict):
        raise StoreError(f"quote: expected the quote's JSON dict, got {type(rec.quote).__name__}")
    points_value(rec.quote)
    key = f"exit:{rec.exit_event_id}"
    c = tx.conn
    done = c.execute("SELECT session_id, entry_ids FROM idempotency WHERE key = :k",
                     {"k": key}).fetchone()
    if done is not None:
        return replay(c, done[0], json.loads(done[1]))
    if rec.session_id is not None:
        s = tx.session(rec.session_id)
        if s.status != "open":
            return replay(c, s.session_id, None)
        sid = s.session_id
    else:
        sid = f"{tx.lane_id}-{uuid.uuid4().hex[:12]}"
        c.execute(
            "INSERT INTO sessions (session_id, plate, entered_at, entry_lane, "
            "vehicle_class, member_id, status, rules_version) VALUES "
            "(:s, :p, :e, NULL, :v, :m, 'closed', :r)",
            {"s": sid, "p": rec.plate, "e": at_s,
             "v": str(rec.quote.get("vehicle_class", "small")), "m": rec.member_id,
             "r": rec.rules_version},
        )
    mid = rec.member_id
    member: Member | None = None
    before: int | None = None
    if mid:
        found = members.member_and_balance(c, mid, rec.exited_at)
        if found is None and (deducted or earned or rec.coupons_used):
            raise StoreError(f"member_id: unknown member {mid!r}")
        if found is not None:
            member, before = found
    entries = _exit_entries(tx, rec, sid, fee, payable, lots, earned)
    if rec.prepaid:
        entries += prepayments.consume(tx, rec.prepaid, sid, rec.plate, mid, rec.exited_at)
    after = members.spendable(c, member.member_id, rec.exited_at) if member else None
    status = "owed" if payable > 0 else "closed"
    c.execute(
        "UPDATE sessions SET status = :st, exited_at = :x, exit_lane = :l, "
        "fee = :f, payable = :pay, points_deducted = :d, points_earned = :e, "
        "rules_version = :r, exit_event_id = :ev, member_id = COALESCE(:m, "
        "member_id), points_before = :b, balance_after = :a, tier = :t, "
        "exit_detail = :det WHERE session_id = :s",
        {"st": status, "x": at_s, "l": tx.lane_id, "f": str(fee), "pay": str(payable),
         "d": deducted, "e": earned, "r": rec.rules_version, "ev": rec.exit_event_id,
         "m": mid, "b": before, "a": after, "t": member.tier if member else None,
         "s": sid, "det": json.dumps(_detail(rec, lots, earned))},
    )
    ids = [e.entry_id for e in entries]
    c.execute("INSERT INTO idempotency (key, scope, session_id, entry_ids) VALUES "
              "(:k, 'exit', :s, :i)", {"k": key, "s": sid, "i": json.dumps(ids)})
    return ExitResult(tx.session(sid), tuple(entries), False, after)


def points_value(quote: dict[str, Any]) -> Decimal:
    """Money the deducted points covered: the quote's ``points_value``, else its point lines."""
    try:
        if "points_value" in quote:
            return Decimal(str(quote["points_value"]))
        return sum((Decimal(str(d.get("amount", "0"))) for d in quote.get("discounts", ())
                    if isinstance(d, dict) and d.get("kind") == "points"), Decimal(0))
    except (ArithmeticError, ValueError, TypeError, AttributeError) as exc:
        raise StoreError(f"quote: points value unreadable ({exc!r})") from exc


def _detail(rec: ExitRecord, lots: dict[str, int], earned: int) -> dict[str, Any]:
    return {"lots_used": [[k, v] for k, v in lots.items()],
            "coupons_used": list(rec.coupons_used),
            "earned_lot_id": f"earn:{rec.exit_event_id}" if earned else None,
            "points_value": str(points_value(rec.quote))}


def _exit_entries(tx: Tx, rec: ExitRecord, sid: str, fee: Decimal,
                  payable: Decimal, lots: dict[str, int], earned: int) -> list[LedgerEntry]:
    """Move the points and coupons, then append the exit's entries in one batch."""
    c = tx.conn
    at, mid = rec.exited_at, rec.member_id
    common: dict[str, Any] = {"session_id": sid, "member_id": mid, "plate": rec.plate,
                              "rules_version": rec.rules_version}
    drafts = [
        Draft(EntryKind.SESSION_CLOSED, at, **common, payload={
            "exit_event_id": rec.exit_event_id, "exit_lane": tx.lane_id,
            "flags": list(rec.flags), "status": "owed" if payable > 0 else "closed"}),
        Draft(EntryKind.FEE_CHARGED, at, **common, payload={
            "fee": fee, "payable": payable, "quote": rec.quote}),
    ]
    if rec.coupons_used:
        assert mid is not None
        for cp in members.use_coupons(c, mid, rec.coupons_used, at, sid):
            drafts.append(Draft(EntryKind.COUPON_USED, at, **common, payload=cp))
    if lots:
        assert mid is not None
        members.spend_lots(c, mid, tuple(lots.items()), at)
        drafts.append(Draft(EntryKind.POINTS_DEDUCTED, at, **common, payload={
            "points": rec.points_deducted, "lots": [[k, v] for k, v in lots.items()],
            "value": points_value(rec.quote)}))
    if earned:
        assert mid is not None
        lot_id = f"earn:{rec.exit_event_id}"
        c.execute("INSERT INTO points_lots (member_id, lot_id, points, remaining, "
                  "expires_at, earned_at) VALUES (:m, :l, :p, :p, :e, :a)",
                  {"m": mid, "l": lot_id, "p": earned, "e": ts_opt(rec.earned_expires_at),
                   "a": ts(at)})
        drafts.append(Draft(EntryKind.POINTS_EARNED, at, **common, payload={
            "points": earned, "lot_id": lot_id, "expires_at": rec.earned_expires_at}))
    if mid and (lots or earned):
        members.refresh_balance(c, mid)
    return tx.append_all(drafts)


def replay(c: Db, session_id: str, ids: list[str] | None) -> ExitResult:
    """The stored result of an exit, as ``record_exit`` first returned it."""
    s = sessions.get(c, session_id)
    if ids is None and s.exit_event_id:
        row = c.execute("SELECT entry_ids FROM idempotency WHERE key = :k",
                        {"k": f"exit:{s.exit_event_id}"}).fetchone()
        ids = json.loads(row[0]) if row else []
    return ExitResult(s, tuple(ledger.by_ids(c, ids or [])), True, s.balance_after)


def last_exit(c: Db, plate: str, since: datetime) -> ExitResult | None:
    """The most recent exit of ``plate`` at or after ``since`` (for replays and re-entry)."""
    r = c.execute("SELECT session_id FROM sessions WHERE plate = :p AND "
                  "status IN ('closed', 'owed') AND exited_at >= :t "
                  "ORDER BY exited_at DESC LIMIT 1",
                  {"p": plate, "t": ts(since, "since")}).fetchone()
    return None if r is None else replay(c, r[0], None)


def record_payment(tx: Tx, session_id: str, amount: Decimal, method: str, at: datetime,
                   idem_key: str) -> LedgerEntry:
    """Money received for a stay; owed -> closed once fully paid. Idempotent on idem_key."""
    amt = checks.amount(amount, "amount")
    if amt == 0:
        raise StoreError("amount: must be greater than zero")
    checks.nonempty(method, "method")
    checks.nonempty(idem_key, "idem_key")
    key = f"pay:{idem_key}"
    c = tx.conn
    done = c.execute("SELECT entry_ids FROM idempotency WHERE key = :k",
                     {"k": key}).fetchone()
    if done is not None:
        return ledger.by_ids(c, json.loads(done[0]))[0]
    s = tx.session(session_id)
    if s.status == "closed":
        raise StoreError(f"session_id: session {session_id} owes nothing")
    if s.status != "owed" or s.payable is None:
        # A prepayment would already be inside the quote's payable; counting it again here
        # would under-report what is owed, so money is only taken against a charged exit.
        raise StoreError(f"session_id: session {session_id} has not been charged yet")
    paid = s.paid + amt
    outstanding = s.payable - paid
    status = "closed" if outstanding <= 0 else "owed"
    c.execute("UPDATE sessions SET paid = :p, status = :st WHERE session_id = :s",
              {"p": str(paid), "st": status, "s": session_id})
    e = tx.append(EntryKind.PAYMENT_RECEIVED, at, session_id=session_id,
                     member_id=s.member_id, plate=s.plate, payload={
                         "amount": amt, "method": method, "idem_key": idem_key,
                         "paid_total": paid, "outstanding": outstanding})
    c.execute("INSERT INTO idempotency (key, scope, session_id, entry_ids) VALUES "
              "(:k, 'payment', :s, :i)",
              {"k": key, "s": session_id, "i": json.dumps([e.entry_id])})
    return e


def reverse_exit(tx: Tx, session_id: str, at: datetime, reason: str) -> list[LedgerEntry]:
    """The vehicle backed away after the exit was committed: undo it with CORRECTIONs."""
    c = tx.conn
    s = tx.session(session_id)
    if s.status == "open" or s.exited_at is None:
        return []
    row = c.execute("SELECT exit_detail FROM sessions WHERE session_id = :s",
                    {"s": session_id}).fetchone()[0]
    det: dict[str, Any] = json.loads(row) if row else {}
    mid = s.member_id
    common: dict[str, Any] = {"session_id": session_id, "member_id": mid,
                              "plate": s.plate, "rules_version": s.rules_version}
    out: list[LedgerEntry] = []
    lots = [(str(k), int(v)) for k, v in det.get("lots_used", [])]
    if lots and mid:
        for lot_id, pts in lots:
            c.execute(
                "INSERT INTO points_lots (member_id, lot_id, points, remaining) VALUES "
                "(:m, :l, :p, :p) ON CONFLICT (member_id, lot_id) DO UPDATE SET "
                "points = MAX(points, remaining + :p), remaining = remaining + :p",
                {"m": mid, "l": lot_id, "p": pts})
        out.append(tx.append(EntryKind.CORRECTION, at, **common, payload={
            "action": "points_returned", "points": s.points_deducted,
            "lots": [[k, v] for k, v in lots], "value": det.get("points_value", "0"),
            "reason": reason}))
    for cid in det.get("coupons_used", []):
        c.execute("UPDATE coupons SET used_at = NULL, used_session = NULL "
                  "WHERE coupon_id = :c AND used_session = :s",
                  {"c": cid, "s": session_id})
        out.append(tx.append(EntryKind.CORRECTION, at, **common, payload={
            "action": "coupon_returned", "coupon_id": cid, "reason": reason}))
    earned_lot = det.get("earned_lot_id")
    if earned_lot and mid and s.points_earned:
        found = c.execute("SELECT remaining FROM points_lots WHERE member_id = :m "
                          "AND lot_id = :l", {"m": mid, "l": earned_lot}).fetchone()
        rem = found[0] if found else None
        take = min(int(rem or 0), s.points_earned)
        c.execute("UPDATE points_lots SET remaining = remaining - :t "
                  "WHERE member_id = :m AND lot_id = :l",
                  {"t": take, "m": mid, "l": earned_lot})
        out.append(tx.append(EntryKind.CORRECTION, at, **common, payload={
            "action": "earned_revoked", "points": take, "lot_id": earned_lot,
            "unrecovered": s.points_earned - take, "reason": reason}))
    if mid and members.get_member(c, mid) is not None:
        members.refresh_balance(c, mid)
    out += prepayments.release(tx, session_id, s.plate, mid, at, reason)
    c.execute(
        "UPDATE sessions SET status = 'open', exited_at = NULL, exit_lane = NULL, "
        "fee = NULL, payable = NULL, paid = '0', points_deducted = 0, points_earned = 0, "
        "exit_event_id = NULL, exit_detail = NULL, points_before = NULL, "
        "balance_after = NULL WHERE session_id = :s", {"s": session_id})
    out.append(tx.append(EntryKind.CORRECTION, at, **common, payload={
        "action": "session_reopened", "reason": reason, "fee": s.fee,
        "payable": s.payable, "paid": s.paid, "exit_event_id": s.exit_event_id}))
    return out
