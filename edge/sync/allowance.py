"""How many points a lane may deduct from an account right now: pure, no I/O, no clock.

Online, the lane trusts its available balance (central's balance minus its own deductions
central has not applied yet). Offline, two lanes could spend the same points, so each lane
spends at most the allowance central granted it for that account (plus a small configured
overdraft) beyond what central has confirmed. A flagged (overdrawn) account spends nothing.
"""

from __future__ import annotations


def spend_limit(*, available: int, online: bool, allowance: int, overdraft: int,
                unconfirmed_spent: int, flagged: bool) -> int:
    """Points this lane may still deduct: ``unconfirmed_spent`` is what it has deducted
    (net) since central's last balance for the account."""
    if flagged or available <= 0:
        return 0
    if online:
        return available
    return max(0, min(available, allowance + overdraft - max(0, unconfirmed_spent)))
