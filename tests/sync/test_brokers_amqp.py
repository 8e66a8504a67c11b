"""RabbitMQ's equivalent of a shared subscription: several workers on one AMQP queue.

Why (#16): central will run several workers behind ``$share/<group>/...`` on Mosquitto;
RabbitMQ 3.10's MQTT plugin has no shared subscriptions (a ``$share/...`` filter is taken
as a plain topic and matches nothing: ``test_share_prefix_is_a_plain_topic_on_rabbitmq``).
Its MQTT topics are routing keys on the ``amq.topic`` exchange (``/`` becomes ``.``), so
workers consume one queue bound to ``parkedge.{site}.lane.*.ledger`` over AMQP (each batch
goes to one worker) and publish acks to ``amq.topic``, which the lanes get over MQTT,
unchanged. The lane's code does not know which broker or which worker it talks to.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from edge.sync import codec

from .conftest import KEYS, SITE, make_store, make_sync, wait_until, write_events
from .test_brokers import Watcher

pika = pytest.importorskip("pika")


def amqp_params(node: Any) -> Any:
    from parkedge_sim.rabbitmq import PASSWORD, USER

    return pika.ConnectionParameters(host="127.0.0.1", port=node.amqp_port,
                                     credentials=pika.PlainCredentials(USER, PASSWORD))


class Worker(threading.Thread):
    """A central worker's transport: one AMQP connection consuming the shared queue,
    verifying each batch, acking it (MQTT ack via amq.topic) after "committing" it."""

    def __init__(self, node: Any, queue: str, committed: set[int], lock: threading.Lock,
                 name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.node, self.queue, self.committed, self.lock = node, queue, committed, lock
        self.batches = 0
        self.stop_flag = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        conn = pika.BlockingConnection(amqp_params(self.node))
        ch = conn.channel()
        ch.basic_qos(prefetch_count=1)  # one batch at a time: the queue shares them out

        def on_batch(ch: Any, method: Any, _props: Any, body: bytes) -> None:
            b = codec.parse_batch(body, KEYS.get)
            with self.lock:
                self.committed.update(range(b.first_seq, b.last_seq + 1))
                seqs = sorted(self.committed)
            upto = 0
            while upto + 1 in self.committed:
                upto += 1
            above = [s for s in seqs if s > upto]
            ranges: list[tuple[int, int]] = []
            for s in above:
                if ranges and ranges[-1][1] == s - 1:
                    ranges[-1] = (ranges[-1][0], s)
                else:
                    ranges.append((s, s))
            ack = codec.encode_ack(b.lane, upto, ranges, b.batch_id, KEYS[b.lane])
            ch.basic_publish("amq.topic", f"parkedge.{SITE}.lane.{b.lane}.ack", ack)
            ch.basic_ack(method.delivery_tag)
            self.batches += 1
            time.sleep(0.01)  # some work, so that both workers get a share

        ch.basic_consume(self.queue, on_batch)
        self.ready.set()
        while not self.stop_flag.is_set():
            conn.process_data_events(time_limit=0.1)
        conn.close()


def test_workers_share_one_queue_and_acks_reach_the_lane_over_mqtt(
        tmp_path: Path, rabbitmq: Any) -> None:
    conn = pika.BlockingConnection(amqp_params(rabbitmq))
    ch = conn.channel()
    queue = f"parkedge.{SITE}.central.ledger"
    ch.queue_declare(queue, durable=True)  # outlives the workers: batches wait for them
    ch.queue_bind(queue, "amq.topic", routing_key=f"parkedge.{SITE}.lane.*.ledger")
    committed: set[int] = set()
    lock = threading.Lock()
    workers = [Worker(rabbitmq, queue, committed, lock, f"w{i}") for i in range(2)]
    for w in workers:
        w.start()
    assert all(w.ready.wait(15) for w in workers)
    lane = make_store(tmp_path, "entry-1")
    write_events(lane, 300)
    sync = make_sync(lane, rabbitmq.port, batch_max_entries=10, window=4)
    sync.start()
    try:
        assert wait_until(lambda: sync.backlog() == 0, 40), sync.backlog()
        assert committed == set(range(1, 301))
        shares = Counter({w.name: w.batches for w in workers})
        assert all(n > 0 for n in shares.values()), shares  # each worker took batches
        assert sync.bad_acks == 0
    finally:
        sync.stop()
        for w in workers:
            w.stop_flag.set()
            w.join(10)
        ch.queue_delete(queue)
        conn.close()


def test_share_prefix_is_a_plain_topic_on_rabbitmq(rabbitmq: Any, broker: Any) -> None:
    """The difference itself, measured: ``$share/g/...`` splits the messages between its
    subscribers on Mosquitto (even over MQTT 3.1.1) and delivers nothing on RabbitMQ 3.10
    (the subscription is granted, and matches a topic named ``$share/g/...``)."""
    got: dict[str, int] = {}
    for name, node in (("mosquitto", broker), ("rabbitmq", rabbitmq)):
        subs = [Watcher(node.port, f"$share/g/parkedge/{SITE}/probe/+") for _ in range(2)]
        pub = Watcher(node.port, f"parkedge/{SITE}/probe-none")
        try:
            for i in range(10):
                pub.publish(f"parkedge/{SITE}/probe/{i}", b"x")
            time.sleep(1.0)
            got[name] = sum(len(s.got) for s in subs)
            if name == "mosquitto":
                assert all(s.got for s in subs)  # shared out, not copied
        finally:
            for w in (*subs, pub):
                w.close()
    assert got == {"mosquitto": 10, "rabbitmq": 0}
