"""How fast central's pages render on a year of a large site in PostgreSQL.

Creates a fresh database on the local server (127.0.0.1:5432, user postgres), migrates it,
fills it in SQL (``generate_series``): ``--members`` members with a plate each and
``--entries`` points entries over the past year (parking accruals and exit spending, shop
purchases with their lots, reward redemptions), then times, through the real ASGI app and a
signed-in marketing session, the median of ``--runs`` renders of:

* ``overview_ms``: /overview for the last 6 months (every KPI and chart);
* ``member_ms``: /members/{id} (balance, lots, coupons, 200 history lines);
* ``members_search_ms``: /members?q=... by phone digits, by plate and by name (median of all).

After the fill the rollup job folds the year once (``fold_s``: the first fold, in SQL), as a
freshly started central's first minute would. The ``*_first_ms`` keys are the first render
of each page by a freshly started app (a new process would add its imports, not measured):
nothing of the figures is cached in central — every render reads the rollups, the unfolded
tail and the live balances and lots; what is warm after the first render is Jinja's compiled
templates, SQLAlchemy's statement cache, the connection pool and PostgreSQL's buffers.
Then ``tail_rows`` new entries are written and not folded (``overview_tail_ms``: the
overview reading them from the ledger beside the rollups).

Goal: each < 300 ms. The database is dropped at the end unless ``--keep``.

    .venv/bin/python bench/central_pages.py --json
    .venv/bin/python bench/central_pages.py --members 10000 --entries 200000 --json   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from central.app import Central  # noqa: E402
from central.config import parse_config  # noqa: E402
from central.db import make_engine  # noqa: E402
from central.jobs.rollup import run_rollup  # noqa: E402
from central.services import staff  # noqa: E402

ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
RULES = ROOT / "tests" / "central" / "data" / "rules.central.toml"
PW = "bench password 1"


def fill(c: Central, members: int, entries: int, now: datetime) -> None:
    """Members, plates, lots and entries in SQL: a year of a large site in seconds."""
    start = now - timedelta(days=365)
    parking = int(entries * 0.45)   # parking accrual entries (one lot each)
    shop = int(entries * 0.10)      # purchase accrual entries (one lot each)
    spent = entries - parking - shop
    step_p = 365 * 86400 / max(parking, 1)
    step_s = 365 * 86400 / max(shop, 1)
    with c.engine.begin() as db:
        q = db.execute
        q(text("""INSERT INTO members (member_id, phone, name, tier, blocked, balance, version,
                   created_at)
                 SELECT 'M' || lpad(i::text, 6, '0'), '139' || lpad(i::text, 8, '0'),
                        '会员' || i, CASE WHEN i % 4 = 0 THEN 'gold' ELSE 'member' END,
                        false, 0, 1, :start
                 FROM generate_series(1, :n) i"""), {"n": members, "start": start})
        q(text("""INSERT INTO plates (plate, member_id, bound_at)
                 SELECT '粤B' || lpad(i::text, 6, '0'), 'M' || lpad(i::text, 6, '0'), :start
                 FROM generate_series(1, :n) i"""), {"n": members, "start": start})
        q(text("""INSERT INTO shops (shop_id, name, category, api_key_hash, active)
                 VALUES ('cafe-1', 'Cafe', 'dining', 'x1', true),
                        ('shoe-2', 'Shoes', 'retail', 'x2', true)"""))
        q(text("""INSERT INTO points_lots (lot_id, member_id, points, remaining, earned_at,
                   expires_at, source)
                 SELECT 'session:' || i, 'M' || lpad((1 + i % :m)::text, 6, '0'), 20, 10,
                        :start + make_interval(secs => i * :step),
                        :start + make_interval(secs => i * :step) + interval '365 days',
                        'parking'
                 FROM generate_series(1, :n) i"""),
          {"n": parking, "m": members, "start": start, "step": step_p})
        q(text("""INSERT INTO purchases (shop_id, idempotency_key, member_id, amount, category,
                   brand, at, points, rules_fired, request_hash, lot_id)
                 SELECT CASE WHEN i % 2 = 0 THEN 'cafe-1' ELSE 'shoe-2' END, 'k' || i,
                        'M' || lpad((1 + (i * 7) % :m)::text, 6, '0'), 8800,
                        CASE WHEN i % 2 = 0 THEN 'dining' ELSE 'retail' END, NULL,
                        :start + make_interval(secs => i * :step),
                        CASE WHEN i % 2 = 0 THEN 100 ELSE 88 END, '["base:purchase"]', 'h',
                        'purchase:' || i
                 FROM generate_series(1, :n) i"""),
          {"n": shop, "m": members, "start": start, "step": step_s})
        q(text("""INSERT INTO points_lots (lot_id, member_id, points, remaining, earned_at,
                   expires_at, source)
                 SELECT lot_id, member_id, points, points, at, at + interval '365 days',
                        'purchase' FROM purchases"""))
        q(text("""INSERT INTO points_entries (member_id, kind, points, at, lot_id, ref,
                   unique_key)
                 SELECT member_id, 'points_earned', points, earned_at, lot_id, 'bench',
                        'earn:' || lot_id FROM points_lots"""))
        q(text("""INSERT INTO points_entries (member_id, kind, points, at, lot_id, ref)
                 SELECT member_id, 'points_spent', -10, earned_at + interval '2 hours',
                        lot_id, 'lane X1'
                 FROM points_lots WHERE source = 'parking' ORDER BY id LIMIT :n"""),
          {"n": spent})
        q(text("""INSERT INTO rewards (reward_id, kind, name, points, value, hours, active)
                 VALUES ('park-1h', 'parking_hours', '1小时停车券', 60, 500, 1, true),
                        ('mug', 'merchandise', 'Mug', 300, 3000, NULL, true),
                        ('cinema', 'experience', 'Cinema', 600, 8000, NULL, true)"""))
        q(text("""INSERT INTO redemptions (redemption_key, member_id, reward_id, points, value,
                   at, month, coupon_id)
                 SELECT 'r' || i, 'M' || lpad((1 + (i * 13) % :m)::text, 6, '0'),
                        (ARRAY['park-1h', 'mug', 'cinema'])[1 + i % 3], 60, 500,
                        :start + make_interval(secs => i * 600),
                        to_char(:start + make_interval(secs => i * 600), 'YYYY-MM'), NULL
                 FROM generate_series(1, :n) i"""),
          {"n": min(50000, members // 2), "m": members, "start": start})
        q(text("""UPDATE members m SET balance = t.b FROM (
                   SELECT member_id, sum(points) b FROM points_entries GROUP BY member_id) t
                 WHERE t.member_id = m.member_id"""))


def add_tail(c: Central, n: int, now: datetime) -> None:
    """``n`` parking accruals in the last minutes, not folded yet (the rollup's tail)."""
    with c.engine.begin() as db:
        db.execute(text("""INSERT INTO points_lots (lot_id, member_id, points, remaining,
                   earned_at, expires_at, source)
                 SELECT 'tail:' || i, 'M' || lpad((1 + i * 17 % :m)::text, 6, '0'), 20, 20,
                        :now - make_interval(secs => i), :now + interval '365 days', 'parking'
                 FROM generate_series(1, :n) i"""), {"n": n, "m": 1000, "now": now})
        db.execute(text("""INSERT INTO points_entries (member_id, kind, points, at, lot_id,
                   ref, unique_key)
                 SELECT member_id, 'points_earned', points, earned_at, lot_id, 'bench',
                        'earn:' || lot_id FROM points_lots WHERE lot_id LIKE 'tail:%'"""))


def once(client: Any, url: str) -> float:
    t0 = time.perf_counter()
    r = client.get(url)
    if r.status_code != 200:
        raise SystemExit(f"{url}: {r.status_code} {r.text[:300]}")
    return round((time.perf_counter() - t0) * 1000, 1)


def timed(client: Any, url: str, runs: int) -> float:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = client.get(url)
        out.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise SystemExit(f"{url}: {r.status_code} {r.text[:300]}")
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--members", type=int, default=100_000)
    ap.add_argument("--entries", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tail", type=int, default=2000, help="unfolded entries for the last key")
    ap.add_argument("--keep", action="store_true", help="keep the database")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    from fastapi.testclient import TestClient

    from central.db import upgrade
    from central.web import create_app

    name = f"central_bench_{secrets.token_hex(4)}"
    admin = make_engine(ADMIN).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        cfg = parse_config({"site": {"site_id": "mall-1", "timezone": "Asia/Shanghai"},
                            "database": {"url": url}, "rules": {"bundle": str(RULES)}})
        c = Central.from_config(cfg)
        upgrade(c.engine)
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        fill(c, a.members, a.entries, now)
        # what autovacuum does to a year-old database: statistics and the visibility map
        # (index-only scans of the expiring lots)
        with c.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
        fill_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_rollup(c)
        fold_s = time.perf_counter() - t0
        with c.tx() as s:
            staff.add_user(s, "mkt", "marketing", PW, now)
        mid = f"M{a.members // 2:06d}"
        searches = [f"/members?q={q}" for q in (
            f"139{a.members // 3:08d}"[-6:], f"粤B{a.members // 3:06d}", f"会员{a.members // 3}")]
        with TestClient(create_app(c), base_url="https://testserver") as client:
            page = client.get("/login")
            tok = re.search(r'name="login_token" value="([^"]+)"', page.text)
            assert tok
            client.post("/login", data={"username": "mkt", "password": PW, "next": "",
                                        "login_token": tok.group(1)})
            first = {"overview_first_ms": once(client, "/overview"),
                     "member_first_ms": once(client, f"/members/{mid}"),
                     "members_search_first_ms": once(client, searches[0])}
            result = {
                "load_avg_1m": round(os.getloadavg()[0], 1),  # a shared 2-core box
                "members": a.members, "entries": a.entries, "fill_s": round(fill_s, 1),
                "fold_s": round(fold_s, 1), **first,
                "overview_ms": round(timed(client, "/overview", a.runs), 1),
                "member_ms": round(timed(client, f"/members/{mid}", a.runs), 1),
                "members_search_ms": round(statistics.median([
                    timed(client, u, a.runs) for u in searches]), 1),
            }
            add_tail(c, a.tail, now)
            result["tail_rows"] = a.tail
            result["overview_tail_ms"] = round(timed(client, "/overview", a.runs), 1)
            t0 = time.perf_counter()
            run_rollup(c)
            result["fold_tail_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        c.close()
    finally:
        if not a.keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    if a.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:20} {v}")


if __name__ == "__main__":
    main()
