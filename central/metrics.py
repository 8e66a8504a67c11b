"""Prometheus metrics of central: one private registry (tests and several apps in one
process never collide), served on its own loopback port when ``[metrics].listen`` is set.

Labels are bounded on purpose: a refused request is counted by route template and error
kind, never by a field name or value the client chose.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

REFUSED = Counter("central_requests_refused", "HTTP requests answered with a 4xx.",
                  ["route", "error"], registry=REGISTRY)
PURCHASES = Counter("central_pos_purchases", "POS purchases by outcome.", ["result"],
                    registry=REGISTRY)
POINTS_EARNED = Counter("central_points_earned", "Points earned from POS purchases.",
                        registry=REGISTRY)
LOGINS_FAILED = Counter("central_logins_failed", "Failed sign-ins.", ["kind"],
                        registry=REGISTRY)
LOGINS_THROTTLED = Counter("central_logins_throttled", "Sign-ins refused by the rate limit.",
                           ["kind"], registry=REGISTRY)
JOB_RUNS = Counter("central_job_runs", "Scheduled or manual job runs.", ["job"],
                   registry=REGISTRY)
POINTS_EXPIRED = Counter("central_points_expired", "Points written off by the expiry job.",
                         registry=REGISTRY)
PERK_COUPONS = Counter("central_perk_coupons_granted", "Monthly perk coupons granted.",
                       registry=REGISTRY)


def start_metrics_server(listen: str) -> None:
    host, _, port = listen.rpartition(":")
    start_http_server(int(port), addr=host.strip("[]"), registry=REGISTRY)
