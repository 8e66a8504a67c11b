"""Request and response bodies of the JSON API (apart from the database models).

Every request model forbids unknown fields and is strict about types: money is a decimal
string (``"59.90"``), so ``1e400`` and ``NaN`` are a wrong type, not a huge number.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator

Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$")]
Money = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,9}(\.[0-9]{1,2})?$")]
Phone = Annotated[str, StringConstraints(pattern=r"^\+?[0-9]{5,20}$")]
Password = Annotated[str, StringConstraints(min_length=1, max_length=256)]
PlateText = Annotated[str, StringConstraints(min_length=1, max_length=32)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _sane_year(v: datetime) -> datetime:
    if not 2000 <= v.year <= 2100:
        raise ValueError("out of range (years 2000..2100)")
    return v


class PurchaseRequest(Request):
    shop_id: Id
    idempotency_key: Id = Field(description="unique per shop; a retry with it earns once")
    member_id: Id
    amount: Money = Field(description='yuan as a decimal string, e.g. "59.90"')
    at: AwareDatetime = Field(description="purchase time with a UTC offset")
    brand: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None

    _year = field_validator("at")(_sane_year)

    @field_validator("at", mode="before")
    @classmethod
    def _iso(cls, v: Any) -> Any:
        if not isinstance(v, str):
            raise ValueError("must be an ISO 8601 string with a UTC offset")
        try:
            return datetime.fromisoformat(v)
        except ValueError:
            raise ValueError("not an ISO 8601 date-time") from None


class PurchaseResponse(BaseModel):
    purchase_id: int
    points: int
    rules_fired: list[str]
    expires_at: datetime | None
    replayed: bool


class StaffLogin(Request):
    username: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    password: Password


class MemberLogin(Request):
    phone: Phone
    password: Password | None = None
    code: Annotated[str, StringConstraints(pattern=r"^[0-9]{8}$")] | None = None


class LoginResponse(BaseModel):
    subject: str
    role: str
    csrf_token: str


class NewUser(Request):
    username: Annotated[str, StringConstraints(min_length=2, max_length=64)]
    role: Literal["marketing", "operations", "auditor", "admin"]
    password: Password


class NewMember(Request):
    member_id: Id
    tier: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    phone: Phone | None = None
    name: Annotated[str, StringConstraints(max_length=200)] = ""
    plates: list[PlateText] = Field(default_factory=list, max_length=10)
    password: Password | None = None


class PlateBody(Request):
    plate: PlateText


class Adjustment(Request):
    points: int = Field(ge=-1_000_000, le=1_000_000)
    reason: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    ref: Id = Field(description="unique per correction: a retry does not apply it twice")


class RewardBody(Request):
    kind: Literal["parking_hours", "discount", "merchandise", "experience"]
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    points: int = Field(ge=1, le=10_000_000)
    value: Money = Field(description="yuan, counted against the monthly redemption cap")
    hours: int | None = Field(default=None, ge=1, le=72)
    active: bool = True
    tiers: list[Annotated[str, StringConstraints(min_length=1, max_length=32)]] | None = Field(
        default=None, max_length=20, description="the tiers that may redeem; null: every tier")
    category: Annotated[str, StringConstraints(min_length=1, max_length=32)] | None = None
    stock: int | None = Field(default=None, ge=0, le=1_000_000,
                              description="merchandise and experiences; null: no limit")


class RedeemBody(Request):
    reward_id: Id
    redemption_key: Id


class ShopBody(Request):
    shop_id: Id
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    category: Literal["retail", "dining", "entertainment", "services", "other"]
