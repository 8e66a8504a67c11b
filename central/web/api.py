"""JSON API for staff and members. Routers stay thin: parse, check who asks, call a service,
write the audit line in the same transaction, answer."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from central import metrics
from central.db.models import (
    Coupon,
    Member,
    PointsEntry,
    PointsLot,
    Purchase,
    Redemption,
    Reward,
)
from central.services import (
    audit,
    members,
    points,
    purchases,
    rewards,
    sessions,
    signin,
    staff,
)
from central.services.errors import Refused
from central.services.figures import figures as compute_figures
from central.web.schemas import (
    Adjustment,
    LoginResponse,
    MemberLogin,
    NewMember,
    NewUser,
    PlateBody,
    RedeemBody,
    RewardBody,
    ShopBody,
    StaffLogin,
)
from central.web.security import (
    CSV_BODY,
    DB,
    MEMBER_COOKIE,
    STAFF_COOKIE,
    AMember,
    MembersWrite,
    PointsAdjust,
    Reader,
    RewardsWrite,
    ShopsWrite,
    UsersWrite,
    central_of,
    http_error,
)

router = APIRouter(prefix="/api")


def _iso(v: datetime | None) -> str | None:
    return v.isoformat() if v else None


# ------------------------------------------------------------------ views of one member
def member_view(s: Session, member_id: str, now: datetime) -> dict[str, Any]:
    m = members.get_member(s, member_id)
    out = members.member_json(m, members.plates_of(s, member_id))
    out["spendable"] = points.spendable(s, member_id, now)
    return out


def lots_view(s: Session, member_id: str) -> list[dict[str, Any]]:
    members.get_member(s, member_id)
    rows = s.scalars(select(PointsLot).where(PointsLot.member_id == member_id)
                     .order_by(PointsLot.expires_at, PointsLot.id))
    return [{"lot_id": r.lot_id, "points": r.points, "remaining": r.remaining,
             "earned_at": _iso(r.earned_at), "expires_at": _iso(r.expires_at),
             "source": r.source} for r in rows]


def history_view(s: Session, member_id: str, limit: int) -> list[dict[str, Any]]:
    members.get_member(s, member_id)
    rows = s.scalars(select(PointsEntry).where(PointsEntry.member_id == member_id)
                     .order_by(PointsEntry.at.desc(), PointsEntry.id.desc()).limit(limit))
    return [{"id": r.id, "kind": r.kind, "points": r.points, "at": _iso(r.at),
             "lot_id": r.lot_id, "ref": r.ref} for r in rows]


def redemptions_view(s: Session, member_id: str | None, limit: int) -> list[dict[str, Any]]:
    q = select(Redemption).order_by(Redemption.at.desc()).limit(limit)
    if member_id is not None:
        q = q.where(Redemption.member_id == member_id)
    return [{"redemption_id": r.id, "redemption_key": r.redemption_key,
             "member_id": r.member_id, "reward_id": r.reward_id, "points": r.points,
             "value": str(r.value), "at": _iso(r.at), "month": r.month,
             "coupon_id": r.coupon_id} for r in s.scalars(q)]


def coupons_view(s: Session, member_id: str) -> list[dict[str, Any]]:
    rows = s.scalars(select(Coupon).where(Coupon.member_id == member_id)
                     .order_by(Coupon.coupon_id))
    return [{"coupon_id": c.coupon_id, "kind": c.kind, "value": c.value,
             "valid_until": _iso(c.valid_until), "source": c.source,
             "used_at": _iso(c.used_at)} for c in rows]


def rewards_view(s: Session, active_only: bool) -> list[dict[str, Any]]:
    q = select(Reward).order_by(Reward.points, Reward.reward_id)
    if active_only:
        q = q.where(Reward.active.is_(True))
    return [rewards.reward_json(r) for r in s.scalars(q)]


# ------------------------------------------------------------------ sign-in
def _set_cookie(response: Response, name: str, token: str, hours: int) -> None:
    response.set_cookie(name, token, max_age=hours * 3600, secure=True, httponly=True,
                        samesite="strict", path="/")


def refused_sign_in(exc: signin.SignInRefused) -> int:
    """Count a refused sign-in; its HTTP status (429 throttled, 401 wrong credentials)."""
    if exc.why == "throttled":
        metrics.LOGINS_THROTTLED.labels(exc.kind).inc()
        return 429
    metrics.LOGINS_FAILED.labels(exc.kind).inc()
    return 401


def _refused_json(request: Request, exc: signin.SignInRefused, field: str) -> JSONResponse:
    if refused_sign_in(exc) == 429:
        minutes = central_of(request).cfg.web.login_window_minutes
        return JSONResponse({"error": "rate_limited", "field": "password",
                             "message": "too many failed sign-ins; try again later"},
                            status_code=429, headers={"Retry-After": str(minutes * 60)})
    return JSONResponse({"error": "unauthenticated", "field": field,
                         "message": "wrong credentials"}, status_code=401)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.post("/staff/login", response_model=LoginResponse, tags=["auth"])
def staff_login(body: StaffLogin, request: Request, response: Response, s: DB) -> Any:
    c = central_of(request)
    try:
        u, new = signin.staff(s, body.username, body.password, client=_client(request),
                              now=c.clock(), web=c.cfg.web)
    except signin.SignInRefused as exc:
        return _refused_json(request, exc, "password")
    _set_cookie(response, STAFF_COOKIE, new.token, c.cfg.web.session_hours)
    return LoginResponse(subject=u.username, role=u.role, csrf_token=new.csrf_token)


@router.post("/staff/logout", status_code=204, tags=["auth"])
def staff_logout(request: Request, response: Response, who: Reader, s: DB) -> None:
    sessions.close_session(s, request.cookies.get(STAFF_COOKIE, ""))
    audit.record(s, actor=who.actor, action="staff.logout", target=f"user:{who.username}",
                 at=central_of(request).clock())
    response.delete_cookie(STAFF_COOKIE, path="/", secure=True, httponly=True,
                           samesite="strict")


@router.get("/staff/me", response_model=LoginResponse, tags=["auth"])
def staff_me(who: Reader) -> Any:
    return LoginResponse(subject=who.username, role=who.role, csrf_token=who.csrf_token)


@router.post("/member/login", response_model=LoginResponse, tags=["member portal"])
def member_login(body: MemberLogin, request: Request, response: Response, s: DB) -> Any:
    if (body.password is None) == (body.code is None):
        raise http_error(422, "password", "give either password or code", "invalid")
    c = central_of(request)
    try:
        m, new = signin.member(s, body.phone, password=body.password, code=body.code,
                               client=_client(request), now=c.clock(), web=c.cfg.web)
    except signin.SignInRefused as exc:
        return _refused_json(request, exc, "password" if body.password else "code")
    _set_cookie(response, MEMBER_COOKIE, new.token, c.cfg.web.session_hours)
    return LoginResponse(subject=m.member_id, role="member", csrf_token=new.csrf_token)


@router.post("/member/logout", status_code=204, tags=["member portal"])
def member_logout(request: Request, response: Response, who: AMember, s: DB) -> None:
    sessions.close_session(s, request.cookies.get(MEMBER_COOKIE, ""))
    response.delete_cookie(MEMBER_COOKIE, path="/", secure=True, httponly=True,
                           samesite="strict")


# ------------------------------------------------------------------ member portal: own data
@router.get("/me", tags=["member portal"])
def me(request: Request, who: AMember, s: DB) -> Any:
    out = member_view(s, who.member_id, central_of(request).clock())
    out["coupons"] = coupons_view(s, who.member_id)
    return out


@router.get("/me/lots", tags=["member portal"])
def my_lots(who: AMember, s: DB) -> Any:
    return lots_view(s, who.member_id)


@router.get("/me/history", tags=["member portal"])
def my_history(who: AMember, s: DB, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
    return history_view(s, who.member_id, limit)


@router.get("/me/redemptions", tags=["member portal"])
def my_redemptions(who: AMember, s: DB) -> Any:
    return redemptions_view(s, who.member_id, 200)


@router.get("/me/rewards", tags=["member portal"])
def my_rewards(who: AMember, request: Request, s: DB) -> Any:
    """The rewards this member's tier may redeem; each says whether it can be redeemed now
    and why not (``points``, ``monthly_cap``, ``out_of_stock``); the month's cap beside."""
    c = central_of(request)
    now = c.clock()
    return rewards.catalogue_for(s, c.rules, who.member_id,
                                 points.spendable(s, who.member_id, now), now)


@router.post("/me/redemptions", status_code=201, tags=["member portal"])
def my_redeem(body: RedeemBody, request: Request, who: AMember, s: DB) -> Any:
    c = central_of(request)
    r = rewards.redeem(s, c.rules, member_id=who.member_id, reward_id=body.reward_id,
                       redemption_key=body.redemption_key, now=c.clock())
    return {"redemption_id": r.redemption_id, "points": r.points, "value": str(r.value),
            "coupon_id": r.coupon_id, "replayed": r.replayed}


# ------------------------------------------------------------------ staff: members
@router.get("/members", tags=["members"])
def list_members(who: Reader, s: DB, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                 offset: Annotated[int, Query(ge=0)] = 0) -> Any:
    rows = s.scalars(select(Member).order_by(Member.member_id).limit(limit).offset(offset))
    return [members.member_json(m, members.plates_of(s, m.member_id)) for m in rows]


@router.post("/members", status_code=201, tags=["members"])
def add_member(body: NewMember, request: Request, who: MembersWrite, s: DB) -> Any:
    c = central_of(request)
    members.enrol(s, c.rules, member_id=body.member_id, phone=body.phone, name=body.name,
                  tier=body.tier, now=c.clock(), plates=tuple(body.plates),
                  password=body.password)
    after = member_view(s, body.member_id, c.clock())
    audit.record(s, actor=who.actor, action="member.add", target=f"member:{body.member_id}",
                 at=c.clock(), after=after)
    return after


@router.post("/members/import", tags=["members"])
def import_members(request: Request, who: MembersWrite, s: DB, text: CSV_BODY) -> Any:
    """CSV body (``text/csv``): member_id,phone,name,tier,plates; all rows or none."""
    c = central_of(request)
    n = members.import_members(s, c.rules, text, c.clock())
    audit.record(s, actor=who.actor, action="member.import", target="csv", at=c.clock(),
                 after={"members": n})
    return {"enrolled": n}


@router.get("/members/{member_id}", tags=["members"])
def get_member(member_id: str, request: Request, who: Reader, s: DB) -> Any:
    out = member_view(s, member_id, central_of(request).clock())
    out["coupons"] = coupons_view(s, member_id)
    return out


@router.get("/members/{member_id}/lots", tags=["members"])
def member_lots(member_id: str, who: Reader, s: DB) -> Any:
    return lots_view(s, member_id)


@router.get("/members/{member_id}/history", tags=["members"])
def member_history(member_id: str, who: Reader, s: DB,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
    return history_view(s, member_id, limit)


@router.get("/members/{member_id}/balance", tags=["members"])
def member_balance(member_id: str, request: Request, who: Reader, s: DB) -> Any:
    m = members.get_member(s, member_id)
    return {"member_id": member_id, "balance": m.balance,
            "spendable": points.spendable(s, member_id, central_of(request).clock())}


@router.post("/members/{member_id}/plates", status_code=201, tags=["plates"])
def bind_plate(member_id: str, body: PlateBody, request: Request, who: MembersWrite, s: DB) -> Any:
    c = central_of(request)
    before = members.plates_of(s, member_id) if s.get(Member, member_id) else None
    plate = members.bind_plate(s, member_id, body.plate, c.clock())
    s.flush()
    audit.record(s, actor=who.actor, action="plate.bind", target=f"member:{member_id}",
                 at=c.clock(), before={"plates": before},
                 after={"plates": members.plates_of(s, member_id)})
    return {"member_id": member_id, "plate": plate}


@router.delete("/members/{member_id}/plates/{plate}", tags=["plates"])
def unbind_plate(member_id: str, plate: str, request: Request, who: MembersWrite, s: DB) -> Any:
    c = central_of(request)
    before = members.plates_of(s, member_id)
    p = members.unbind_plate(s, member_id, plate)
    s.flush()
    audit.record(s, actor=who.actor, action="plate.unbind", target=f"member:{member_id}",
                 at=c.clock(), before={"plates": before},
                 after={"plates": members.plates_of(s, member_id)})
    return {"member_id": member_id, "plate": p, "bound": False}


@router.post("/members/{member_id}/code", tags=["members"])
def member_code(member_id: str, request: Request, who: MembersWrite, s: DB) -> Any:
    c = central_of(request)
    code = members.issue_code(s, member_id, c.clock())
    audit.record(s, actor=who.actor, action="member.code", target=f"member:{member_id}",
                 at=c.clock())
    return {"member_id": member_id, "code": code, "valid_minutes": members.CODE_MINUTES}


@router.post("/members/{member_id}/adjustments", status_code=201, tags=["members"])
def adjust(member_id: str, body: Adjustment, request: Request, who: PointsAdjust, s: DB) -> Any:
    c = central_of(request)
    before = members.get_member(s, member_id).balance
    points.adjust(s, c.rules, member_id, body.points, c.clock(), reason=body.reason,
                  ref=body.ref)
    s.flush()
    after = members.get_member(s, member_id).balance
    audit.record(s, actor=who.actor, action="points.adjust", target=f"member:{member_id}",
                 at=c.clock(), before={"balance": before},
                 after={"balance": after, "points": body.points, "reason": body.reason})
    return {"member_id": member_id, "balance": after}


@router.get("/members/{member_id}/redemptions", tags=["redemptions"])
def member_redemptions(member_id: str, who: Reader, s: DB) -> Any:
    members.get_member(s, member_id)
    return redemptions_view(s, member_id, 200)


# ------------------------------------------------------------------ rewards, redemptions
@router.get("/rewards", tags=["rewards"])
def list_rewards(who: Reader, s: DB) -> Any:
    return rewards_view(s, False)


@router.put("/rewards/{reward_id}", tags=["rewards"])
def put_reward(reward_id: str, body: RewardBody, request: Request, who: RewardsWrite, s: DB) -> Any:
    old = s.get(Reward, reward_id)
    before = rewards.reward_json(old) if old else None
    r = rewards.put_reward(s, reward_id=reward_id, kind=body.kind, name=body.name,
                           points=body.points, value=Decimal(body.value), hours=body.hours,
                           active=body.active, tiers=body.tiers, category=body.category,
                           stock=body.stock, known_tiers=central_of(request).rules.tier_names)
    after = rewards.reward_json(r)
    audit.record(s, actor=who.actor, action="reward.put", target=f"reward:{reward_id}",
                 at=central_of(request).clock(), before=before, after=after)
    return after


@router.get("/redemptions", tags=["redemptions"])
def list_redemptions(who: Reader, s: DB, limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> Any:
    return redemptions_view(s, None, limit)


# ------------------------------------------------------------------ shops, users, figures
@router.post("/shops", status_code=201, tags=["shops"])
def add_shop(body: ShopBody, request: Request, who: ShopsWrite, s: DB) -> Any:
    key = purchases.add_shop(s, body.shop_id, body.name, body.category)
    audit.record(s, actor=who.actor, action="shop.add", target=f"shop:{body.shop_id}",
                 at=central_of(request).clock(), after=body.model_dump())
    return {"shop_id": body.shop_id, "api_key": key}


@router.post("/staff/users", status_code=201, tags=["staff"])
def add_user(body: NewUser, request: Request, who: UsersWrite, s: DB) -> Any:
    c = central_of(request)
    staff.add_user(s, body.username, body.role, body.password, c.clock())
    after = {"username": body.username, "role": body.role}
    audit.record(s, actor=who.actor, action="user.add", target=f"user:{body.username}",
                 at=c.clock(), after=after)
    return after


@router.post("/staff/users/{username}/disable", tags=["staff"])
def disable_user(username: str, request: Request, who: UsersWrite, s: DB) -> Any:
    if username == who.username:
        raise Refused("username", "you cannot disable yourself")
    staff.set_disabled(s, username, True)
    sessions.close_sessions_of(s, "staff", username)
    audit.record(s, actor=who.actor, action="user.disable", target=f"user:{username}",
                 at=central_of(request).clock(), before={"disabled": False},
                 after={"disabled": True})
    return {"username": username, "disabled": True}


@router.get("/figures", tags=["figures"])
def figures(request: Request, who: Reader, s: DB) -> Any:
    c = central_of(request)
    return compute_figures(s, c.cfg.site.tz, c.cfg.points.cost_per_point)


@router.get("/audit", tags=["staff"])
def audit_log(who: Reader, s: DB, limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> Any:
    return audit.entries(s, limit)


@router.get("/purchases", tags=["pos"])
def list_purchases(who: Reader, s: DB, limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> Any:
    rows = s.scalars(select(Purchase).order_by(Purchase.id.desc()).limit(limit))
    return [{"purchase_id": p.id, "shop_id": p.shop_id, "idempotency_key": p.idempotency_key,
             "member_id": p.member_id, "amount": str(p.amount), "category": p.category,
             "brand": p.brand, "at": _iso(p.at), "points": p.points,
             "rules_fired": json.loads(p.rules_fired)} for p in rows]
