"""A reconnect answer's prepaid revocations come from ``refunds.revoked``: signed once per
change of the site's revoked set, whose version is read in the answer's one common query
(central/ingest/answer.py), so a cached set costs no statement; a refund written after a
cached answer is in the next answer. On SQLite and PostgreSQL (#16)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import event

from central.app import Central
from central.ingest.worker import IngestWorker
from central.services import prepay, refunds
from edge.sync import codec, topics
from tests.central.test_ingest_answer import Sent
from tests.central.test_ingest_worker_cost import LANES, site

__all__ = ["site"]  # the fixture


class AllStatements:
    def __init__(self, c: Central) -> None:
        self.seen: list[str] = []
        event.listen(c.engine, "before_cursor_execute", self._on)

    def _on(self, _conn: Any, _cur: Any, sql: str, *_a: Any) -> None:
        if not sql.startswith("BEGIN"):  # SQLite's own BEGIN IMMEDIATE (db/engine.py)
            self.seen.append(sql)


def _pay_and_refund(c: Central, w: IngestWorker, pid: str, *, refund: bool = True) -> None:
    now = c.clock()
    with c.tx() as s:
        prepay.prepay(s, w.site, payment_id=pid, amount=Decimal("12.00"), paid_at=None,
                      now=now, key=w.signing_key, source="paystation:ps1", plate="粤B12345")
    if refund:
        with c.tx() as s:
            refunds.refund(s, pid, actor="staff:ops", reason="test", now=c.clock(),
                           key=w.signing_key)


def _revoked_ids(w: IngestWorker, sent: Sent, lane: str) -> list[str]:
    """Ask a full snapshot for ``lane``; the payment ids of the revocations in it."""
    sent.msgs.clear()
    w._snapshot(lane, None)
    mine = [p for t, p in sent.msgs if t == topics.snapshot(w.site, lane)]
    pub = w.signing_key.public_key()
    out = []
    for p in mine[2:]:  # after the roster and the rules
        try:
            r = codec.parse_prepaid_revoked(p, w.site, pub)
        except codec.SyncMessageError:
            continue  # a member snapshot
        out.append(r.payment_id)
    return sorted(out)


def test_answers_carry_revocations_and_a_new_refund_is_never_missed(site: Central) -> None:
    w = site.ingest_worker(client_id="revoked-test")
    sent = Sent(w)
    _pay_and_refund(site, w, "pay-1")
    _pay_and_refund(site, w, "pay-kept", refund=False)
    assert _revoked_ids(w, sent, LANES[0]) == ["pay-1"]
    assert _revoked_ids(w, sent, LANES[1]) == ["pay-1"]  # from the cache
    hits = refunds.revoked_stats["hits"]
    assert _revoked_ids(w, sent, LANES[2]) == ["pay-1"]
    assert refunds.revoked_stats["hits"] == hits + 1

    # a refund (the web, another process) after a cached answer: in the very next one
    _pay_and_refund(site, w, "pay-2")
    assert _revoked_ids(w, sent, LANES[3]) == ["pay-1", "pay-2"]
    assert _revoked_ids(w, sent, LANES[4]) == ["pay-1", "pay-2"]

    # a revocation whose prepayment expired leaves the answer
    with site.tx() as s:
        p = s.get(refunds.Prepayment, "pay-1")
        assert p is not None
        p.expires_at = site.clock() - timedelta(seconds=1)
    assert _revoked_ids(w, sent, LANES[5]) == ["pay-2"]

    # and another refund at the moment one expires: still seen
    _pay_and_refund(site, w, "pay-3")
    with site.tx() as s:
        p = s.get(refunds.Prepayment, "pay-2")
        assert p is not None
        p.expires_at = site.clock() - timedelta(seconds=1)
    assert _revoked_ids(w, sent, LANES[6]) == ["pay-3"]

    # the same bytes as the uncached service gives
    sent.msgs.clear()
    w._snapshot(LANES[7], None)
    with site.tx() as s:
        fresh = refunds.revocations(s, w.site, site.clock(), w.signing_key)
    assert [p for _t, p in sent.msgs if p in fresh] == fresh


def test_a_cached_answer_reads_no_revocations(site: Central) -> None:
    """Statements per full answer: the revocations' select (and its signing) only when the
    set changed; the version rides in the common part's query."""
    w = site.ingest_worker(client_id="revoked-test")
    Sent(w)
    for i in range(5):
        _pay_and_refund(site, w, f"pay-{i}")
    w._snapshot(LANES[0], None)  # the common part and the revoked set built and cached
    q = AllStatements(site)
    for lane in LANES[1:]:
        w._snapshot(lane, None)
    per = len(q.seen) / len(LANES[1:])
    assert [x for x in q.seen if "refunded_at DESC" in x] == []
    assert per <= 3, q.seen[:6]  # the common part and the version, the watermark, members
    _pay_and_refund(site, w, "pay-new")  # the set changed: read (once) and signed again
    q.seen.clear()
    w._snapshot(LANES[0], None)
    assert len([x for x in q.seen if "refunded_at DESC" in x]) == 1
    assert len(q.seen) == per + 2, q.seen  # the revocations and the live prepayments
    q.seen.clear()
    w._snapshot(LANES[1], None)
    assert len(q.seen) == per


def _prepaid_ids(w: IngestWorker, sent: Sent, lane: str) -> list[str]:
    """Ask a full snapshot for ``lane``; the payment ids of the prepayments in it."""
    sent.msgs.clear()
    w._snapshot(lane, None)
    pub = w.signing_key.public_key()
    out = []
    for t, p in sent.msgs:
        if t != topics.snapshot(w.site, lane):
            continue
        try:
            out.append(codec.parse_prepaid(p, w.site, pub).payment_id)
        except codec.SyncMessageError:
            continue  # the roster, the rules, a revocation, a member snapshot
    return sorted(out)


def test_answers_carry_the_live_prepayments_as_published(site: Central) -> None:
    """A lane away when a prepayment was published gets it in its reconnect answer (a
    broker may not deliver the retained copy): every one neither refunded nor expired,
    byte for byte the message published; a new one or a refund after a cached answer is in
    the next one."""
    w = site.ingest_worker(client_id="prepaid-test")
    sent = Sent(w)
    _pay_and_refund(site, w, "live-1", refund=False)
    assert _prepaid_ids(w, sent, LANES[0]) == ["live-1"]
    with site.tx() as s:
        row = s.get(refunds.Prepayment, "live-1")
        assert row is not None
        assert row.message.encode() in [p for _t, p in sent.msgs]  # as published
    _pay_and_refund(site, w, "live-2", refund=False)  # after a cached answer
    assert _prepaid_ids(w, sent, LANES[1]) == ["live-1", "live-2"]
    with site.tx() as s:
        refunds.refund(s, "live-1", actor="staff:ops", reason="test", now=site.clock(),
                       key=w.signing_key)
    assert _prepaid_ids(w, sent, LANES[2]) == ["live-2"]  # refunded: its revocation instead
    assert _revoked_ids(w, sent, LANES[3]) == ["live-1"]
    with site.tx() as s:
        p = s.get(refunds.Prepayment, "live-2")
        assert p is not None
        p.expires_at = site.clock() - timedelta(seconds=1)
    assert _prepaid_ids(w, sent, LANES[4]) == []  # expired: nothing to settle any more
