"""``parkedge-sim demo`` end to end, as `make demo` runs it: the whole site (broker,
``parkedge-central`` on SQLite, two lane daemons with their own ledgers reading plates from
video) must finish with exit 0, every lane entry at central exactly once, both hash chains
intact, the stays priced as the rules say, and #13's central parts done: a member enrolled
by the CLI, a POS purchase through the API, a prepaid exit, the perks and expiry jobs."""

from __future__ import annotations

import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(600)  # ~1 min on a quiet machine; central's CLI calls cost seconds each
def test_the_demo_site_runs_end_to_end() -> None:
    r = subprocess.run([sys.executable, "-m", "parkedge_sim.cli", "demo"], capture_output=True,
                       text=True, timeout=560, cwd=ROOT)
    out = r.stdout
    assert r.returncode == 0, out[-3000:] + r.stderr[-3000:]
    for lane in ("E1", "X1"):
        assert f"lane {lane}: ledger verify OK" in out
    assert out.count("exactly once") == 2, out[-2000:]
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line and line[0] in "沪苏浙皖粤鲁豫闽京" and " | " not in line}
    # every stay has its row (a plate misread from the video would show here)
    assert {"沪A12345", "苏E9B7K2", "粤B12345", "浙A8P2Q6"} <= set(rows), out[-5000:]
    # the gold member: 3-hour coupon then points, nothing left to pay
    assert rows["沪A12345"][6:9] == ["38.50", "5", "0.00"], rows["沪A12345"]
    # too few points: 3 points spent, the rest paid at the pay station
    assert rows["苏E9B7K2"][6:9] == ["26.50", "3", "20.50"], rows["苏E9B7K2"]
    assert rows["粤B12345"][6] == "0.00"  # monthly pass
    # plates read from the video stream reached the exit lane through MQTT
    assert "X1 out 闽D5K233" in out and "E1 REFUSED 粤B66666" in out
    # central: the CLI enrolment, the gold tier's coupons from the perks job, a POS sale
    assert "member M-2001 enrolled (silver)" in out
    assert "perks job for 2026-11 (bench month): granted 2 coupons" in out
    # ¥300 dining, silver (¥50 a point): 6 x1.5 = 9 points, x2 on a weekend or holiday and
    # x1.2 in the evening's night-shopping campaign (the sale is stamped with the real clock),
    # rounded down: 9, 10, 18 or 21 as the rules that fired say
    sale = re.search(r"through POST /api/pos/purchases: (\d+) points \(([^)]*)\)", out)
    assert sale, out[:3000]
    fired = set(sale.group(2).split(", "))
    assert {"base:purchase", "dining_x1.5"} <= fired <= {
        "base:purchase", "dining_x1.5", "weekend_holiday_x2", "night_shopping_x1.2"}, fired
    mult = Decimal("1.5") * (2 if "weekend_holiday_x2" in fired else 1) \
        * (Decimal("1.2") if "night_shopping_x1.2" in fired else 1)
    assert int(sale.group(1)) == int(6 * mult), (sale.group(0), mult)
    assert "the till's retry answered 200, nothing more earned" in out
    # paid at central, out within the grace: nothing owed at the exit
    assert "prepaid exit OK: opened, nothing to pay" in out
    assert rows["浙A8P2Q6"][6:9] == ["16.00", "0", "0.00"] or rows["浙A8P2Q6"][7:9] == [
        "0", "0.00"], rows["浙A8P2Q6"]
    # the expiry job on the bench clock reached both lanes' member caches
    assert "lanes' balances after the expiry equal central" in out
