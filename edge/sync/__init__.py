"""Site and central sync over MQTT (docs/sync-protocol.md).

The ledger is the outbox (``uplink``), what comes down is validated and applied idempotently
(``downlink``), the wire format is pure (``codec``, ``topics``), and ``LaneSync`` (``service``)
runs both on one worker thread next to paho's network thread (``link``).
"""

from edge.sync.service import LaneSync

__all__ = ["LaneSync"]
