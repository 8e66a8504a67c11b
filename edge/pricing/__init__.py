"""Pricing and points engine: tariffs, point deductions, earning rules, campaigns, caps.

Pure code: no clock reads (every time is an argument) and no I/O in the engine modules
(schema, bundle compile, tariff, spend, earn, quote, explain, perks). The only file access is
``load_bundle`` reading a bundle and ``simulate`` (the offline forecasting tool, never used
on a lane) reading/writing session JSONL. The same engine runs on each lane, on the central
side and in the campaign simulator.
"""

from edge.pricing.bundle import BundleError, RuleBundle, load_bundle, parse_bundle
from edge.pricing.earn import earn_for_purchase, earned_expiry
from edge.pricing.perks import monthly_perk_coupons
from edge.pricing.quote import quote_exit
from edge.pricing.types import (
    Coupon,
    DiscountLine,
    MemberSnapshot,
    PointsLot,
    PurchaseEarn,
    Quote,
    SessionInput,
)

__all__ = [
    "BundleError",
    "Coupon",
    "DiscountLine",
    "MemberSnapshot",
    "PointsLot",
    "PurchaseEarn",
    "Quote",
    "RuleBundle",
    "SessionInput",
    "earn_for_purchase",
    "earned_expiry",
    "load_bundle",
    "monthly_perk_coupons",
    "parse_bundle",
    "quote_exit",
]
