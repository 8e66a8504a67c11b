"""Site and central sync over MQTT (docs/sync-protocol.md).

The ledger is the outbox (``uplink``), what comes down is validated and applied idempotently
(``downlink``), the wire format is pure (``codec``, ``topics``), and ``LaneSync`` (``service``)
runs both on one worker thread next to paho's network thread (``link``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge.sync.service import LaneSync

__all__ = ["LaneSync"]


def __getattr__(name: str) -> Any:
    """``LaneSync`` is imported on first use: central imports the pure ``codec`` and
    ``topics`` modules of this package without pulling in the lane's sync service (its store,
    paho, the lane's metrics)."""
    if name == "LaneSync":
        from edge.sync.service import LaneSync

        return LaneSync
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
