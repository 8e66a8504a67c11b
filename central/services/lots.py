"""Taking points out of lots. Ordering comes from ``edge.pricing.spend.spendable_lots`` (the
lanes' rule: soonest-expiring first, a lot is dead at its expiry instant); the split itself is
the same loop the lanes' ``apply_points`` runs inline.

TODO(edge.pricing): ``take_from_lots`` belongs next to ``spendable_lots`` so the lane's
``apply_points`` and central share it; it is here because this issue may not edit edge/.
"""

from __future__ import annotations

from datetime import datetime

from edge.pricing import PointsLot
from edge.pricing.spend import spendable_lots


def take_from_lots(lots: tuple[PointsLot, ...], points: int, at: datetime
                   ) -> list[tuple[str, int]]:
    """(lot_id, points) to take for ``points``, soonest-expiring first; ValueError if short."""
    if points < 0:
        raise ValueError("points must be >= 0")
    out: list[tuple[str, int]] = []
    left = points
    for lot in spendable_lots(lots, at):
        if left <= 0:
            break
        take = min(lot.points, left)
        out.append((lot.lot_id, take))
        left -= take
    if left > 0:
        raise ValueError(f"{points} points wanted, {points - left} spendable")
    return out
