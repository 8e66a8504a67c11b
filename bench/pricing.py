"""Pricing benchmark: quotes per second on one core, and ``rules simulate`` over 1M sessions.

Usage: .venv/bin/python bench/pricing.py [--sessions 1000000] [--quotes 20000] [--json]
The bundle is config/rules.mall.example.toml (10 campaigns, 3 tiers, caps, night rate);
the sessions come from the synthetic generator (3% multi-day stays, 60% members).
Generating the file is not timed; the simulate time is the full CLI path (read, parse,
quote, aggregate) on every core.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.pricing import (  # noqa: E402
    Coupon,
    MemberSnapshot,
    PointsLot,
    SessionInput,
    load_bundle,
    quote_exit,
)
from edge.pricing.simulate import generate_sessions, simulate_file, write_sessions  # noqa: E402

MALL = ROOT / "config" / "rules.mall.example.toml"


def quote_inputs(n: int) -> list[tuple[SessionInput, MemberSnapshot | None, datetime]]:
    rb = load_bundle(MALL)
    start = datetime(2026, 3, 1, tzinfo=rb.tz)
    rows = generate_sessions(n, rb, start, days=30, seed=7, priced=False)
    out = []
    for i, r in enumerate(rows):
        exited = datetime.fromisoformat(r["exited"])
        entered = datetime.fromisoformat(r["entered"]) if r["entered"] else None
        member = None
        if r["member_id"]:
            lots = (PointsLot("a", 40, exited + timedelta(days=20)),
                    PointsLot("b", int(r["points_before"] or 0), exited + timedelta(days=300)))
            coupons = ((Coupon(f"c{i}", "hours", Decimal(3), exited + timedelta(days=10)),)
                       if r["tier"] == "gold" else ())
            member = MemberSnapshot(r["member_id"], r["tier"], lots, coupons,
                                    redeemed_this_month_value=Decimal(i % 250),
                                    earned_today=i % 120)
        out.append((SessionInput(entered, exited, r["vehicle_class"], r["plate"],
                                 r["lane_id"]), member, exited))
    return out


def bench_quotes(n: int) -> tuple[float, float]:
    rb = load_bundle(MALL)
    inputs = quote_inputs(n)
    t0 = time.perf_counter()
    for s, m, at in inputs:
        quote_exit(s, m, rb, at)
    full = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for s, m, at in inputs:
        quote_exit(s, m, rb, at, explain_lines=False)
    lean = n / (time.perf_counter() - t0)
    return full, lean


def bench_simulate(n: int, workers: int) -> tuple[float, float, float]:
    rb = load_bundle(MALL)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "sessions.jsonl"
        t0 = time.perf_counter()
        write_sessions(path, n, rb, datetime(2026, 3, 1, tzinfo=rb.tz), days=30, seed=11,
                       priced=False)
        gen = time.perf_counter() - t0
        t0 = time.perf_counter()
        c0 = _cpu()
        report = simulate_file(path, MALL, None, workers=workers)
        took = time.perf_counter() - t0
        cpu = _cpu() - c0
    assert report["candidate"]["sessions"] == n, report["candidate"]["sessions"]
    return took, gen, cpu


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the simulate workers)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=1_000_000)
    ap.add_argument("--quotes", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    full, lean = bench_quotes(a.quotes)
    load = os.getloadavg()[0]
    took, gen, cpu = bench_simulate(a.sessions, a.workers)
    scale = 1_000_000 / a.sessions
    out = {
        "quotes_per_s": round(full),
        "quotes_per_s_no_explain": round(lean),
        "simulate_sessions": a.sessions,
        "simulate_s": round(took, 2),
        "simulate_1m_s": round(took * scale, 2),
        "simulate_cpu_s": round(cpu, 2),
        "cpu_us_per_session": round(cpu / a.sessions * 1e6, 1),
        "generate_s": round(gen, 2),
        "load_avg_before": round(load, 2),
        "workers": a.workers or os.cpu_count(),
    }
    if a.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:26} {v}")


if __name__ == "__main__":
    main()
