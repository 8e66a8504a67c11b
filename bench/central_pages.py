"""How fast central's pages render on a year of a large site in PostgreSQL.

Creates a fresh database on the local server (127.0.0.1:5432, user postgres), migrates it,
fills it in SQL (``generate_series``): ``--members`` members with a plate each and
``--entries`` points entries over the past year (parking accruals and exit spending, shop
purchases with their lots, reward redemptions), then times, through the real ASGI app and a
signed-in marketing session, the median and p95 of ``--runs`` renders of:

* ``overview_ms``: /overview for the last 6 months (every KPI and chart);
* ``member_ms``: /members/{id} (balance, lots, coupons, 200 history lines);
* ``members_search_ms``: /members?q=... by phone digits, by plate and by name (all of them).

Each with ``_p95_ms`` (the tail over the repeats) and ``_sql_ms`` / ``_sql_p95_ms``: the
time in the database driver (statement sent to rows fetched), much less sensitive to the
machine's load than the wall clock; the rest is Python (routing, the session check,
summing, Jinja). ``--slowest`` prints each page's slowest statements.

After the fill the rollup job folds the year once (``fold_s``: the first fold, in SQL), as a
freshly started central's first minute would. The ``*_first_ms`` keys are the first render
of each page by a freshly started app (a new process would add its imports, not measured);
``overview_new_period_ms`` is the slowest first render of three periods not seen before
(the kept visit groups are emptied first: the job rebuilds only the default period's, so
each of these is grouped from the month packs by its render). Nothing of the figures is
cached in central's memory: what is warm after the first render is Jinja's compiled
templates, SQLAlchemy's statement cache, the connection pool and PostgreSQL's buffers.
Then ``tail_rows`` new entries are written and not folded (``overview_tail_ms``: the
overview reading them from the ledger beside the rollups), and folded (``fold_tail_ms``).

Goal: each < ``limit_ms`` (300); ``worst_ms`` / ``worst_to_limit`` are the slowest of all the
render figures. Measured in the same run as yardsticks: ``trivial_page_ms`` (/login: the app
and a template, no query) and ``select1_ms`` (a round trip). ``load_avg_1m`` at the start
and the end (a shared 2-core box). The database is dropped at the end unless ``--keep``;
``--reuse NAME`` runs on a kept one (migrated to head first, no fill; each run adds its tail).

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
from zoneinfo import ZoneInfo

from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from central.app import Central  # noqa: E402
from central.config import parse_config  # noqa: E402
from central.db import make_engine  # noqa: E402
from central.jobs.rollup import run_rollup  # noqa: E402
from central.services import rollup, staff  # noqa: E402

ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
RULES = ROOT / "tests" / "central" / "data" / "rules.central.toml"
PW = "bench password 1"
TZ = "Asia/Shanghai"
LIMIT_MS = 300  # the goal for each page


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
    tag = f"tail-{secrets.token_hex(3)}:"  # a reused database has the last runs' tails
    with c.engine.begin() as db:
        db.execute(text("""INSERT INTO points_lots (lot_id, member_id, points, remaining,
                   earned_at, expires_at, source)
                 SELECT :tag || i, 'M' || lpad((1 + i * 17 % :m)::text, 6, '0'), 20, 20,
                        :now - make_interval(secs => i), :now + interval '365 days', 'parking'
                 FROM generate_series(1, :n) i"""), {"n": n, "m": 1000, "now": now, "tag": tag})
        db.execute(text("""INSERT INTO points_entries (member_id, kind, points, at, lot_id,
                   ref, unique_key)
                 SELECT member_id, 'points_earned', points, earned_at, lot_id, 'bench',
                        'earn:' || lot_id FROM points_lots WHERE lot_id LIKE :tag || '%'"""),
                   {"tag": tag})


class SqlClock:
    """Time spent in the database driver (statement sent to rows fetched by the cursor),
    summed per request: the server-side part of a render, much less sensitive to the
    machine's load than the wall clock."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.ms = 0.0
        self.n = 0
        self.slowest: list[tuple[float, str]] = []

        @event.listens_for(engine, "before_cursor_execute")
        def _before(conn: Any, _cur: Any, _st: Any, _p: Any, _ctx: Any, _many: Any) -> None:
            conn.info.setdefault("t0", []).append(time.perf_counter())

        @event.listens_for(engine, "after_cursor_execute")
        def _after(conn: Any, _cur: Any, st: str, _p: Any, _ctx: Any, _many: Any) -> None:
            ms = (time.perf_counter() - conn.info["t0"].pop()) * 1000
            self.ms += ms
            self.n += 1
            self.slowest.append((ms, " ".join(st.split())[:160]))

    def driver(self, fn: Any) -> Any:
        """``fn`` timed into the clock: the month packs' binary fetch runs on psycopg's own
        cursor, which SQLAlchemy's events do not see."""
        def timed_fn(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.ms += (time.perf_counter() - t0) * 1000
                self.n += 1
        return timed_fn

    def reset(self) -> None:
        self.ms, self.n, self.slowest = 0.0, 0, []


def once(client: Any, url: str, clock: SqlClock | None = None) -> tuple[float, float]:
    """(wall ms, SQL ms) of one render."""
    if clock is not None:
        clock.reset()
    t0 = time.perf_counter()
    r = client.get(url)
    wall = (time.perf_counter() - t0) * 1000
    if r.status_code != 200:
        raise SystemExit(f"{url}: {r.status_code} {r.text[:300]}")
    return wall, (clock.ms if clock is not None else 0.0)


def p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]


def timed(client: Any, urls: list[str], runs: int, clock: SqlClock) -> dict[str, float]:
    """Median and p95 of wall and SQL time over ``runs`` renders of each of ``urls``."""
    wall: list[float] = []
    sql: list[float] = []
    for _ in range(runs):
        for u in urls:
            w, q = once(client, u, clock)
            wall.append(w)
            sql.append(q)
    return {"ms": round(statistics.median(wall), 1), "p95_ms": round(p95(wall), 1),
            "sql_ms": round(statistics.median(sql), 1), "sql_p95_ms": round(p95(sql), 1)}


def months_back(now: datetime, n: int) -> str:
    local = now.astimezone(ZoneInfo(TZ))
    y, m = local.year, local.month - n
    while m <= 0:
        y, m = y - 1, m + 12
    return f"{y:04d}-{m:02d}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--members", type=int, default=100_000)
    ap.add_argument("--entries", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=20, help="renders of each page (median, p95)")
    ap.add_argument("--tail", type=int, default=2000, help="unfolded entries for the last key")
    ap.add_argument("--keep", action="store_true", help="keep the database (name on stderr)")
    ap.add_argument("--reuse", metavar="DB", help="a database kept by --keep: no fill")
    ap.add_argument("--slowest", action="store_true",
                    help="print each page's slowest statements to stderr")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    from fastapi.testclient import TestClient

    from central.db import upgrade
    from central.web import create_app

    name = a.reuse or f"central_bench_{secrets.token_hex(4)}"
    admin = make_engine(ADMIN).execution_options(isolation_level="AUTOCOMMIT")
    if not a.reuse:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    load = [round(os.getloadavg()[0], 1)]
    try:
        cfg = parse_config({"site": {"site_id": "mall-1", "timezone": TZ},
                            "database": {"url": url}, "rules": {"bundle": str(RULES)}})
        c = Central.from_config(cfg)
        t0 = time.perf_counter()
        upgrade(c.engine)  # a reused database gets the migrations added since its fill
        migrate_s = time.perf_counter() - t0
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        with c.tx() as s:
            filled = int(s.scalar(text("SELECT count(*) FROM members")) or 0)
            a.members = filled or a.members
            a.entries = int(s.scalar(text("SELECT count(*) FROM points_entries")) or 0) \
                if filled else a.entries
        if not filled:
            fill(c, a.members, a.entries, now)
            # what autovacuum does to a year-old database: statistics and the visibility
            # map (index-only scans)
            with c.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE"))
        fill_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_rollup(c)
        fold_s = time.perf_counter() - t0
        if not filled:  # autovacuum's analyze after the first fold's million rows
            with c.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE member_days, member_months, figures_daily, "
                                  "month_packs, member_slots, lot_expiry_hours"))
        with c.tx() as s:
            if s.scalar(text("SELECT count(*) FROM staff_users WHERE username = 'mkt'")) == 0:
                staff.add_user(s, "mkt", "marketing", PW, now)
            # a cold cache of the pages' own rollups: no period's visit groups kept but
            # the default one the job keeps ready (the new periods below are built by
            # their first render)
            s.execute(text("DELETE FROM visit_groups"))
            s.execute(text("DELETE FROM visit_group_periods"))
        run_rollup(c)
        clock = SqlClock(c.engine)
        rollup._pack_rows = clock.driver(rollup._pack_rows)
        mid = f"M{a.members // 2:06d}"
        searches = [f"/members?q={q}" for q in (
            f"139{a.members // 3:08d}"[-6:], f"粤B{a.members // 3:06d}", f"会员{a.members // 3}")]
        new_periods = [f"/overview?start={months_back(now, f)}&end={months_back(now, e)}"
                       for f, e in ((11, 0), (8, 2), (3, 1))]
        with TestClient(create_app(c), base_url="https://testserver") as client:
            page = client.get("/login")
            tok = re.search(r'name="login_token" value="([^"]+)"', page.text)
            assert tok
            client.post("/login", data={"username": "mkt", "password": PW, "next": "",
                                        "login_token": tok.group(1)})
            result: dict[str, Any] = {
                "members": a.members, "entries": a.entries, "reused": bool(a.reuse),
                "fill_s": round(fill_s, 1), "migrate_s": round(migrate_s, 1),
                "fold_s": round(fold_s, 1), "limit_ms": LIMIT_MS}
            for key, u in (("overview", "/overview"), ("member", f"/members/{mid}"),
                           ("members_search", searches[0])):
                w, q = once(client, u, clock)
                result[f"{key}_first_ms"], result[f"{key}_first_sql_ms"] = round(w, 1), \
                    round(q, 1)
            firsts = [once(client, u, clock) for u in new_periods]
            result["overview_new_period_ms"] = round(max(w for w, _q in firsts), 1)
            result["overview_new_period_sql_ms"] = round(max(q for _w, q in firsts), 1)
            # the limit's yardsticks, measured now: a trivial page (/login: the app and a
            # template, no query) and a SELECT 1 round trip
            base = timed(client, ["/login"], a.runs, clock)
            result["trivial_page_ms"] = base["ms"]
            with c.engine.connect() as conn:
                rt = []
                for _ in range(a.runs):
                    t1 = time.perf_counter()
                    conn.execute(text("SELECT 1"))
                    rt.append((time.perf_counter() - t1) * 1000)
            result["select1_ms"] = round(statistics.median(rt), 2)
            slow: dict[str, list[tuple[float, str]]] = {}
            for key, urls in (("overview", ["/overview"]), ("member", [f"/members/{mid}"]),
                              ("members_search", searches)):
                r = timed(client, urls, a.runs, clock)
                slow[key] = sorted(clock.slowest, reverse=True)[:5]
                result[f"{key}_ms"] = r["ms"]
                result[f"{key}_p95_ms"] = r["p95_ms"]
                result[f"{key}_sql_ms"] = r["sql_ms"]
                result[f"{key}_sql_p95_ms"] = r["sql_p95_ms"]
            add_tail(c, a.tail, now)
            result["tail_rows"] = a.tail
            r = timed(client, ["/overview"], a.runs, clock)
            slow["overview_tail"] = sorted(clock.slowest, reverse=True)[:5]
            result["overview_tail_ms"] = r["ms"]
            result["overview_tail_p95_ms"] = r["p95_ms"]
            result["overview_tail_sql_ms"] = r["sql_ms"]
            t0 = time.perf_counter()
            run_rollup(c)
            result["fold_tail_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        c.close()
        worst = max(result[k] for k in result if k.endswith("_ms") and k.startswith(
            ("overview", "member")) and "sql" not in k)
        result["worst_ms"] = worst
        result["worst_to_limit"] = round(worst / LIMIT_MS, 2)
        result["limit_to_trivial_page"] = round(LIMIT_MS / max(result["trivial_page_ms"],
                                                               0.1), 1)
        load.append(round(os.getloadavg()[0], 1))
        result["load_avg_1m"] = load  # a shared 2-core box: at the start and at the end
        if a.slowest:
            for k, v in slow.items():
                for ms, st in v:
                    print(f"{k:15} {ms:8.1f} ms  {st}", file=sys.stderr)
    finally:
        if not (a.keep or a.reuse):
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        else:
            print(f"database kept: {name} (--reuse {name})", file=sys.stderr)
        admin.dispose()
    if a.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:28} {v}")


if __name__ == "__main__":
    main()
