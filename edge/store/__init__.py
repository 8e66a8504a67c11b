"""Durable ledger and store: sessions, hash-chained append-only entries, member cache, outbox.

One SQLite file per controller (WAL, synchronous=FULL); see docs/ledger.md.
"""

from edge.store.store import Store
from edge.store.types import (
    CouponView,
    EntryKind,
    ExitRecord,
    ExitResult,
    LedgerDamaged,
    LedgerEntry,
    LotView,
    Member,
    MemberView,
    Session,
    StorageUnavailable,
    StoreError,
    VerifyResult,
)

__all__ = [
    "CouponView",
    "EntryKind",
    "ExitRecord",
    "ExitResult",
    "LedgerDamaged",
    "LedgerEntry",
    "LotView",
    "Member",
    "MemberView",
    "Session",
    "StorageUnavailable",
    "Store",
    "StoreError",
    "VerifyResult",
]
