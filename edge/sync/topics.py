"""Topic names of the site sync (docs/sync-protocol.md), in one place: pure."""

from __future__ import annotations

ROOT = "parkedge"


def _check(*names: str) -> None:
    """A segment is one topic level on every broker: no ``.`` either, because RabbitMQ's
    MQTT plugin turns ``/`` into ``.`` in its routing keys, so ``lane/a.b/ledger`` would be
    four levels there and miss ``lane/+/ledger`` (docs/brokers.md)."""
    for n in names:
        if not n or any(c in n for c in "/+#.\0"):
            raise ValueError(f"topic segment {n!r} must be non-empty without / + # . "
                             f"(site, lane and member ids in sync topics)")


def lane(site: str, lane_id: str, leaf: str) -> str:
    _check(site, lane_id)
    return f"{ROOT}/{site}/lane/{lane_id}/{leaf}"


def ledger(site: str, lane_id: str) -> str:
    return lane(site, lane_id, "ledger")


def ack(site: str, lane_id: str) -> str:
    return lane(site, lane_id, "ack")


def status(site: str, lane_id: str) -> str:
    return lane(site, lane_id, "status")


def snapshot(site: str, lane_id: str) -> str:
    return lane(site, lane_id, "snapshot")


def snapshot_request(site: str) -> str:
    _check(site)
    return f"{ROOT}/{site}/snapshot/request"


def sessions_opened(site: str) -> str:
    _check(site)
    return f"{ROOT}/{site}/sessions/opened"


def sessions_closed(site: str) -> str:
    _check(site)
    return f"{ROOT}/{site}/sessions/closed"


def sessions_all(site: str) -> str:
    _check(site)
    return f"{ROOT}/{site}/sessions/+"


def member(site: str, member_id: str) -> str:
    _check(site, member_id)
    return f"{ROOT}/{site}/members/{member_id}"


def members_all(site: str) -> str:
    _check(site)
    return f"{ROOT}/{site}/members/+"


def rules(site: str) -> str:
    _check(site)
    return f"{ROOT}/{site}/rules"


def lanes(site: str) -> str:
    """Central's signed roster of the site's lanes and their session-signing keys."""
    _check(site)
    return f"{ROOT}/{site}/lanes"


def all_ledgers(site: str) -> str:
    _check(site)
    return f"{ROOT}/{site}/lane/+/ledger"


def all_statuses(site: str) -> str:
    _check(site)
    return f"{ROOT}/{site}/lane/+/status"


def lane_of(topic: str) -> str | None:
    """``parkedge/{site}/lane/{lane}/...`` -> lane, else None."""
    parts = topic.split("/")
    return parts[3] if len(parts) >= 5 and parts[0] == ROOT and parts[2] == "lane" else None


def prepaid(site: str, payment_id: str) -> str:
    """Central's signed prepayment, retained per payment (docs/sync-protocol.md)."""
    _check(site, payment_id)
    return f"{ROOT}/{site}/prepaid/{payment_id}"


def prepaid_all(site: str) -> str:
    _check(site)
    return f"{ROOT}/{site}/prepaid/+"
