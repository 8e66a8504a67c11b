"""What the site's broker says while a fault lasts: the bridge's own state (``1`` up, ``0``
down) and each lane's status (``online``/``offline``, backlog), from a client on the site's
loopback (made while the calling thread is in the site's namespace)."""

from __future__ import annotations

import json
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.sync import topics


class SiteObserver:
    def __init__(self, port: int, site: str) -> None:
        self.site = site
        self.bridge: list[str] = []
        self.lanes: dict[str, list[tuple[str, int]]] = {}
        self.recording = False
        self._last_bridge: str | None = None
        self._last: dict[str, tuple[str, int]] = {}
        self._lock = threading.Lock()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"observer-{port}")
        self._client.on_message = self._on_message
        self._client.on_connect = lambda c, *_a: c.subscribe(
            [(f"parkedge/{site}/bridge/central", 1), (topics.all_statuses(site), 1)])
        self._port = port

    def start(self) -> None:
        self._client.connect("127.0.0.1", self._port, keepalive=10)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()

    def record(self, on: bool) -> None:
        """From now (``on``), keep what is said, starting with the last word before."""
        with self._lock:
            self.recording = on
            if on:
                self.bridge = [] if self._last_bridge is None else [self._last_bridge]
                self.lanes = {lane: [st] for lane, st in self._last.items()}

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            if msg.topic.endswith("/bridge/central"):
                self._last_bridge = msg.payload.decode(errors="replace")
                if self.recording:
                    self.bridge.append(self._last_bridge)
                return
            lane = topics.lane_of(msg.topic) or "?"
            try:
                d = json.loads(msg.payload)
                st = (str(d["state"]), int(d["backlog"]))
            except (ValueError, KeyError, TypeError):
                return
            self._last[lane] = st
            if self.recording:
                self.lanes.setdefault(lane, []).append(st)
