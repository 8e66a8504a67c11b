"""Members: enrolment, plates, member passwords and one-time codes, CSV import."""

from __future__ import annotations

import csv
import io
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from central.db.models import Member, OneTimeCode, Plate
from central.services.errors import Invalid, NotFound, Refused
from central.services.passwords import digest, hash_password
from edge.fields import FieldError, check_id, check_plate, normalise_plate
from edge.pricing import RuleBundle

PHONE = re.compile(r"^\+?[0-9]{5,20}$")
CODE_MINUTES = 30


def member_json(m: Member, plates: list[str]) -> dict[str, Any]:
    return {"member_id": m.member_id, "phone": m.phone, "name": m.name, "tier": m.tier,
            "blocked": m.blocked, "balance": m.balance, "plates": plates}


def plates_of(s: Session, member_id: str) -> list[str]:
    return list(s.scalars(select(Plate.plate).where(Plate.member_id == member_id)
                          .order_by(Plate.plate)))


def get_member(s: Session, member_id: str) -> Member:
    m = s.get(Member, member_id)
    if m is None:
        raise NotFound("member_id", f"unknown member {member_id!r}")
    return m


def _plate(raw: str, field: str = "plate") -> str:
    try:
        return check_plate(normalise_plate(raw))
    except FieldError as exc:
        raise Invalid(field, str(exc).removeprefix("plate: ")) from None


def enrol(s: Session, rules: RuleBundle, *, member_id: str, phone: str | None, name: str,
          tier: str, now: datetime, plates: tuple[str, ...] = (),
          password: str | None = None) -> Member:
    """A new member; refused if the id or phone is taken or a plate is someone else's."""
    try:
        check_id(member_id, "member_id")
    except FieldError as exc:
        raise Invalid("member_id", str(exc).removeprefix("member_id: ")) from None
    if phone is not None and not PHONE.fullmatch(phone):
        raise Invalid("phone", "must be 5..20 digits, optionally after +")
    if tier not in rules.tier_names:
        raise Invalid("tier", f"unknown tier {tier!r}; the bundle has "
                              f"{', '.join(rules.tier_names)}")
    if len(name) > 200:
        raise Invalid("name", "at most 200 characters")
    if s.get(Member, member_id) is not None:
        raise Refused("member_id", f"member {member_id!r} exists")
    if phone is not None and s.scalar(select(Member).where(Member.phone == phone)) is not None:
        raise Refused("phone", "another member has this phone number")
    m = Member(member_id=member_id, phone=phone, name=name, tier=tier, blocked=False,
               balance=0, version=1, created_at=now,
               password_hash=hash_password(password) if password is not None else None)
    s.add(m)
    s.flush()
    for p in plates:
        bind_plate(s, member_id, p, now)
    return m


def bind_plate(s: Session, member_id: str, raw: str, now: datetime) -> str:
    plate = _plate(raw)
    m = get_member(s, member_id)
    row = s.get(Plate, plate)
    if row is not None:
        if row.member_id == member_id:
            return plate
        raise Refused("plate", f"{plate} is bound to another member")
    s.add(Plate(plate=plate, member_id=member_id, bound_at=now))
    m.version = m.version + 1
    return plate


def unbind_plate(s: Session, member_id: str, raw: str) -> str:
    plate = _plate(raw)
    m = get_member(s, member_id)
    row = s.get(Plate, plate)
    if row is None or row.member_id != member_id:
        raise NotFound("plate", f"{plate} is not bound to {member_id}")
    s.delete(row)
    m.version = m.version + 1
    return plate


def set_member_password(s: Session, member_id: str, password: str) -> None:
    get_member(s, member_id).password_hash = hash_password(password)


def issue_code(s: Session, member_id: str, now: datetime) -> str:
    """A one-time sign-in code staff hand to the member (there is no SMS gateway)."""
    get_member(s, member_id)
    code = f"{secrets.randbelow(10**8):08d}"
    s.add(OneTimeCode(code_hash=digest(f"{member_id}:{code}"), member_id=member_id,
                      expires_at=now + timedelta(minutes=CODE_MINUTES)))
    return code


def use_code(s: Session, member_id: str, code: str, now: datetime) -> bool:
    row = s.get(OneTimeCode, digest(f"{member_id}:{code}"), with_for_update=True)
    if row is None or row.used_at is not None or row.expires_at <= now:
        return False
    row.used_at = now
    return True


@dataclass(frozen=True)
class ImportRow:
    line: int
    member_id: str
    phone: str | None
    name: str
    tier: str
    plates: tuple[str, ...]


IMPORT_COLUMNS = ("member_id", "phone", "name", "tier", "plates")


def parse_members_csv(text: str) -> list[ImportRow]:
    """CSV with a header ``member_id,phone,name,tier,plates`` (plates space-separated)."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or set(reader.fieldnames) != set(IMPORT_COLUMNS):
        raise Invalid("header", f"must be {','.join(IMPORT_COLUMNS)}, got "
                                f"{','.join(reader.fieldnames or [])}")
    rows = []
    for i, r in enumerate(reader, start=2):
        if None in r:
            raise Invalid(f"line {i}", "more fields than the header")
        rows.append(ImportRow(i, (r["member_id"] or "").strip(), (r["phone"] or "").strip()
                              or None, (r["name"] or "").strip(),
                              (r["tier"] or "").strip(), tuple((r["plates"] or "").split())))
    return rows


def import_members(s: Session, rules: RuleBundle, text: str, now: datetime) -> int:
    """Enrol every row or none: the first bad row's line and column are named."""
    rows = parse_members_csv(text)
    for r in rows:
        try:
            enrol(s, rules, member_id=r.member_id, phone=r.phone, name=r.name, tier=r.tier,
                  now=now, plates=r.plates)
        except (Invalid, Refused, NotFound) as exc:
            raise type(exc)(f"line {r.line}: {exc.field}", exc.message) from None
    return len(rows)
