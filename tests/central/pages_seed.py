"""A small mall's months for the pages' tests and screenshots: members with plates and
phones, shops, purchases (through the POS service, so the bundle's rules earn), parking
accruals and exit spending as the lanes' ingest will write them, rewards and redemptions.
Deterministic (seeded random) so the figures and screenshots are stable."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from central.services import members, points, purchases, rewards, staff
from central.services.purchases import PurchaseIn

PW = "correct horse battery"
STAFF = [("mkt", "marketing"), ("ops", "operations"), ("aud", "auditor"), ("adm", "admin")]
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = ["伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛"]
REWARDS = [("park-1h", "parking_hours", "1小时停车券", 60, "5", 1),
           ("park-3h", "parking_hours", "3小时停车券", 150, "15", 3),
           ("voucher-20", "discount", "¥20 餐饮抵用券", 200, "20", None),
           ("voucher-50", "discount", "¥50 购物抵用券", 450, "50", None),
           ("mug", "merchandise", "商场纪念杯", 300, "30", None),
           ("cinema", "experience", "IMAX 电影票", 600, "80", None),
           ("spa", "experience", "亲子乐园畅玩", 1500, "190", None)]


def seed(c: Any, n_members: int = 40, start: datetime | None = None) -> dict[str, Any]:
    """Members M001.. (M001 phone 13800000001 and M002 13800000002 have password PW),
    five months of purchases, parking and redemptions before ``c.now``."""
    rnd = random.Random(14)
    now: datetime = c.now
    start = start or (now - timedelta(days=155)).replace(hour=9, minute=0, second=0, microsecond=0)
    with c.tx() as s:
        for name, role in STAFF:
            staff.add_user(s, name, role, PW, now)
        for sid, cat in [("cafe-1", "dining"), ("hotpot-2", "dining"), ("fashion-3", "retail"),
                         ("kids-4", "retail")]:
            purchases.add_shop(s, sid, sid, cat)
        for rid, kind, name, pts, value, hours in REWARDS:
            rewards.put_reward(s, reward_id=rid, kind=kind, name=name, points=pts,
                               value=Decimal(value), hours=hours)
        ids = []
        for i in range(1, n_members + 1):
            mid = f"M{i:03d}"
            nm = SURNAMES[i % len(SURNAMES)] + GIVEN[i % len(GIVEN)] + (
                GIVEN[(i * 7) % len(GIVEN)] if i % 3 else "")
            members.enrol(s, c.rules, member_id=mid, phone=f"138{i:08d}", name=nm,
                          tier="gold" if i % 4 == 0 else "member",
                          now=start, plates=(f"粤B{10000 + i * 37:05d}",),
                          password=PW if i <= 2 else None)
            ids.append(mid)
    # visits: a frequent few and many occasional members
    t = start
    seq = 0
    while t < now - timedelta(hours=2):
        with c.tx() as s:
            for mid in ids:
                i = int(mid[1:])
                p_visit = 0.2 if i % 5 == 0 else (0.07 if i % 2 else 0.025)
                if i <= 2:
                    p_visit = 0.15
                if rnd.random() > p_visit:
                    continue
                seq += 1
                when = t + timedelta(hours=rnd.randint(0, 10), minutes=rnd.randint(0, 59))
                if when >= now:
                    continue
                m = points.lock_member(s, mid)
                pts = rnd.choice([10, 20, 20, 30, 40])
                points.accrue(s, c.rules, m, pts, when, lot_id=f"session:{seq}",
                              source="parking", ref=f"lane E1 session {seq}")
                if rnd.random() < 0.7:
                    shop = rnd.choice(["cafe-1", "hotpot-2", "fashion-3", "kids-4"])
                    amount = Decimal(rnd.choice([38, 66, 88, 128, 199, 268, 420]))
                    purchases.record_purchase(
                        s, c.rules, PurchaseIn(shop, f"k{seq}", mid, amount,
                                               when + timedelta(minutes=30),
                                               "brand-a" if rnd.random() < 0.1 else None),
                        when + timedelta(minutes=31))
                bal = points.spendable(s, mid, when + timedelta(hours=2))
                if bal >= 30 and rnd.random() < 0.35:
                    points.spend(s, m, min(bal, rnd.choice([10, 20, 30])),
                                 when + timedelta(hours=2), kind="points_spent",
                                 ref=f"lane X1 session {seq}")
                if rnd.random() < 0.3:
                    bal = points.spendable(s, mid, when + timedelta(hours=2))
                    fits = [r for r in REWARDS if r[3] <= bal]
                    if fits:
                        r = rnd.choice(fits)
                        try:
                            with s.begin_nested():
                                rewards.redeem(s, c.rules, member_id=mid, reward_id=r[0],
                                               redemption_key=f"seed-{seq}",
                                               now=when + timedelta(hours=2, minutes=5))
                        except Exception:  # the monthly cap: that member skips it
                            pass
        t += timedelta(days=1)
    return {"members": ids, "staff": dict(STAFF), "password": PW}
