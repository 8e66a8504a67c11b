"""Prometheus metrics of central: one private registry (tests and several apps in one
process never collide), served on its own loopback port when ``[metrics].listen`` is set.

Labels are bounded on purpose: a refused request is counted by route template and error
kind, never by a field name or value the client chose.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

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
PREPAID_REFUND_CONFLICTS = Gauge(
    "central_prepaid_refund_conflicts", "Refunded prepayments a lane nonetheless let a car "
    "out on (refunded_at and used_by both set; refunded in the last 30 days), as last "
    "counted (the clearing job, GET /api/prepayments?conflict=true).", registry=REGISTRY)
PERK_COUPONS = Counter("central_perk_coupons_granted", "Monthly perk coupons granted.",
                       registry=REGISTRY)


def start_metrics_server(listen: str) -> None:
    host, _, port = listen.rpartition(":")
    start_http_server(int(port), addr=host.strip("[]"), registry=REGISTRY)


# ---------------------------------------------------------------- ingest (central/ingest)
INGEST_ENTRIES = Counter("central_ingest_entries", "Lane ledger entries committed (new rows).",
                         ["lane"], registry=REGISTRY)
INGEST_DUPLICATES = Counter("central_ingest_duplicates", "Lane entries received again "
                            "(already committed: acked, not applied).", registry=REGISTRY)
INGEST_BATCHES = Counter("central_ingest_batches", "Lane batches committed (or acked as "
                         "duplicates).", registry=REGISTRY)
INGEST_GROUPS = Counter("central_ingest_group_commits", "Ingest transactions (group commits).",
                        ["path"], registry=REGISTRY)
INGEST_REFUSED = Counter("central_ingest_refused", "Lane messages refused, by reason "
                         "(bad_hmac, seq_conflict, schema, unknown_lane ...).", ["reason"],
                         registry=REGISTRY)
INGEST_FLAGGED = Counter("central_ingest_flagged", "Entries recorded but flagged.",
                         registry=REGISTRY)
INGEST_RETRIES = Counter("central_ingest_retries", "Group commits retried (deadlock, a "
                         "concurrent worker's insert).", registry=REGISTRY)
INGEST_LAG = Gauge("central_ingest_lag_seconds", "Now minus the recorded time of the last "
                   "entry committed, per lane (at commit).", ["lane"], registry=REGISTRY)
INGEST_LAG_HIST = Histogram("central_ingest_entry_lag_seconds", "Entry recorded -> committed.",
                            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600, 3600),
                            registry=REGISTRY)
INGEST_PUBLISHED = Counter("central_ingest_published", "Messages published to the lanes.",
                           ["kind"], registry=REGISTRY)
INGEST_LEADER = Gauge("central_ingest_leader", "1 while this worker publishes member "
                      "states, the outbox, rules and roster.", registry=REGISTRY)
INGEST_STALLED = Gauge("central_ingest_lanes_stalled", "Lanes whose backlog is stalled.",
                       registry=REGISTRY)
