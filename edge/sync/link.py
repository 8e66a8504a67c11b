"""The MQTT connection of a lane: paho-mqtt 2.x kept at arm's length.

paho runs its own network thread; everything it hands us goes into a bounded inbox and is
handled by the sync worker thread, so a slow SQLite write never stalls the socket and an
exception can never kill paho's thread (every callback catches everything). paho is not the
buffer: we publish only while connected, its queue is bounded, and whatever is lost on a
disconnect is re-sent from the ledger.
"""

from __future__ import annotations

import logging
import queue
import socket
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.sync.refusals import Refusals

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsFiles:
    ca_file: str
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True)
class LinkSettings:
    host: str
    port: int
    client_id: str
    keepalive_s: int = 15
    username: str | None = None
    password: str | None = None
    tls: TlsFiles | None = None
    max_inbox: int = 2000
    max_queued: int = 200
    max_payload: int = 4 * 1024 * 1024


def _nodelay(client: mqtt.Client) -> None:
    """paho leaves Nagle on: a small ack behind another small packet then waits for the
    peer's delayed ACK (~40 ms), which caps a windowed sender at a few batches per 40 ms."""
    try:
        sock = client.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        log.debug("TCP_NODELAY not set", exc_info=True)


class MqttLink:
    """One paho client: connect_async + loop_start, auto-reconnect, bounded inbox."""

    def __init__(self, settings: LinkSettings, subscriptions: Sequence[str],
                 will: tuple[str, bytes] | None = None,
                 refusals: Refusals | None = None) -> None:
        if not 5 <= settings.keepalive_s <= 30:
            raise ValueError(f"keepalive_s: {settings.keepalive_s} must be 5..30 s")
        self.settings = settings
        self._subs = list(subscriptions)
        self.inbox: queue.Queue[tuple[str, bytes]] = queue.Queue(settings.max_inbox)
        self.wake = threading.Event()
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # the broker acknowledged every subscription
        self._sub_mid: int | None = None
        self.generation = 0  # +1 on every successful connect
        self.dropped = 0
        self.oversized = 0
        self.refuse = refusals or Refusals()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=settings.client_id,
                        clean_session=True)
        c.max_queued_messages_set(settings.max_queued)
        c.max_inflight_messages_set(100)
        c.reconnect_delay_set(min_delay=1, max_delay=4)
        if settings.username:
            c.username_pw_set(settings.username, settings.password)
        if settings.tls is not None:
            c.tls_set(ca_certs=settings.tls.ca_file, certfile=settings.tls.cert_file,
                      keyfile=settings.tls.key_file, cert_reqs=ssl.CERT_REQUIRED,
                      tls_version=ssl.PROTOCOL_TLS_CLIENT)
        if will is not None:
            c.will_set(will[0], will[1], qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self._client = c

    # ---------------------------------------------------------------- paho callbacks
    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        try:
            if rc.is_failure:
                log.warning("MQTT connect refused: %s", rc)
                return
            _nodelay(client)
            self.subscribed.clear()
            if self._subs:
                _rc, self._sub_mid = client.subscribe([(t, 1) for t in self._subs])
            else:
                self.subscribed.set()
            self.generation += 1
            self.connected.set()
            self.wake.set()
            log.info("MQTT connected to %s:%s", self.settings.host, self.settings.port)
        except Exception:  # never let paho's thread die
            log.exception("MQTT on_connect failed")

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, mid: int, codes: Any, _p: Any) -> None:
        try:
            if mid == self._sub_mid:
                if any(getattr(rc, "is_failure", False) for rc in codes):
                    log.error("MQTT subscription refused (ACL?): %s", codes)
                self.subscribed.set()
        except Exception:
            log.exception("MQTT on_subscribe failed")

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        try:
            if self.connected.is_set():
                log.warning("MQTT disconnected: %s", rc)
            self.connected.clear()
            self.subscribed.clear()
            self.wake.set()
        except Exception:
            log.exception("MQTT on_disconnect failed")

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            if len(msg.payload) > self.settings.max_payload:
                self.oversized += 1
                self.refuse("too_large", f"{msg.topic[:120]}: {len(msg.payload)} bytes > "
                                         f"{self.settings.max_payload}")
                return
            self.inbox.put_nowait((msg.topic, bytes(msg.payload)))
            self.wake.set()
        except queue.Full:
            self.dropped += 1  # every message is recoverable (resend, snapshot, retained)
            self.refuse("inbox_full", f"{msg.topic[:120]}: inbox of "
                                      f"{self.settings.max_inbox} full")
        except Exception:
            log.exception("MQTT on_message failed")

    # ---------------------------------------------------------------- use
    def start(self) -> None:
        self._client.connect_async(self.settings.host, self.settings.port,
                                   keepalive=self.settings.keepalive_s)
        self._client.loop_start()

    def stop(self, final: tuple[str, bytes] | None = None, timeout_s: float = 2.0) -> None:
        """Publish ``final`` (e.g. the retained offline status) if connected, then leave."""
        try:
            if final is not None and self.connected.is_set():
                info = self._client.publish(final[0], final[1], qos=1, retain=True)
                info.wait_for_publish(timeout=timeout_s)
        except Exception:
            log.debug("final publish failed", exc_info=True)
        self.connected.clear()  # a disconnect we asked for is not worth a warning
        self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        """Hand a message to paho if connected; False means 'not sent, try again later'."""
        if not self.connected.is_set():
            return False
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
        except Exception:
            log.debug("publish to %s failed", topic, exc_info=True)
            return False
        return info.rc == mqtt.MQTT_ERR_SUCCESS
