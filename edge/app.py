"""The composition root: reads the config, builds every part, runs one lane until stopped.

Nothing imports this module except the CLI. Each part is built from its own config section
and talks to the others only through the interfaces in ``edge.barrier.interfaces``,
``edge.lpr.source`` and the store, so a driver can be swapped without touching the lane.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from edge import metrics, notify
from edge.barrier.interfaces import Barrier, Display, Loops
from edge.config import Config
from edge.control import ControlServer
from edge.lane import machine as m
from edge.lane.decide import Decider, LanePolicy, MatchFn, exact_match
from edge.lane.runner import EventClock, LaneRunner, StorageWatch
from edge.lpr.manual import ManualPlateSource, MergedPlateSource
from edge.lpr.source import PlateRead, PlateSource
from edge.lpr.sources import build_plate_source
from edge.pricing import load_bundle
from edge.rules_holder import RulesHolder
from edge.store import LedgerDamaged, Store
from edge.store.guard import check_ledger
from edge.store.pending import PendingRecords

log = logging.getLogger(__name__)

# sysexits.h EX_DATAERR: the ledger is damaged or lost entries. The systemd unit lists it in
# RestartPreventExitStatus=, so a lane that cannot trust its ledger stops instead of looping.
EXIT_LEDGER_DAMAGED = 65


@dataclass
class Built:
    barrier: Barrier
    loops: Loops
    display: Display
    plates: PlateSource
    closers: list[Any]


def build_matcher(cfg: Config) -> MatchFn:
    """Safe exit matching from the plate grammar; exact matching if LPR is not installed."""
    try:
        from edge.lpr.grammar import grammar_by_name
        from edge.lpr.matching import match_exit
    except ImportError:
        log.warning("plate matching module missing: exits match exact plates only")
        return exact_match
    grammar = grammar_by_name(cfg.lpr.grammar)

    def match(read: PlateRead, open_plates: list[str]) -> tuple[str | None, str, bool]:
        r = match_exit(read, open_plates, grammar)
        return r.plate, r.kind, r.spend_points_ok

    return match


class LaneApp:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.tz = ZoneInfo(cfg.lane.timezone)
        self.clock = EventClock(self.tz, use_events=cfg.lane.clock == "event")
        self.runner: LaneRunner | None = None
        self.store: Store | None = None
        self.sync: Any = None
        self._stop = asyncio.Event()
        self._reload = False

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        cfg = self.cfg
        notify.status("starting")
        self.store = store = self._open_store()
        rules = RulesHolder(load_bundle(cfg.rules.path), self.clock.now)
        from edge.barrier.factory import build_devices

        devices = build_devices(cfg)
        self.manual = ManualPlateSource(cfg.lane.id)
        plates = MergedPlateSource(build_plate_source(cfg, self.tz, self.clock.now),
                                   self.manual)
        timeouts = m.Timeouts(
            plate_s=cfg.lane.plate_timeout_s,
            arm_s=cfg.lane.arm_confirm_s,
            pass_s=cfg.lane.clear_timeout_s,
            payment_s=cfg.lane.payment_timeout_s,
        )
        policy = LanePolicy(
            lane_id=cfg.lane.id,
            direction=cfg.lane.direction,
            tz=self.tz,
            unknown_plate=cfg.lane.unknown_plate,
            uncertain_read=cfg.lane.uncertain_read,
        )
        sync = self._sync(store, rules)
        limit = None
        if sync is not None:
            overdraft = cfg.sync.offline_overdraft

            def limit(member_id: str) -> int:
                return int(sync.spend_limit(member_id, overdraft=overdraft))

        decider = Decider(store, rules.current, policy, build_matcher(cfg), spend_limit=limit)
        self.runner = runner = LaneRunner(
            lane=m.Lane(direction=cfg.lane.direction, timeouts=timeouts),
            decider=decider,
            store=store,
            barrier=devices.barrier,
            loops=devices.loops,
            display=devices.display,
            plates=plates,
            clock=self.clock,
            idle_lines=list(cfg.lane.idle_lines),
            on_decision=self._count,
            pending=self._pending(),
            storage=StorageWatch(min_free_bytes=cfg.storage.min_free_bytes,
                                 probe_s=cfg.storage.probe_s),
        )
        control = ControlServer(Path(cfg.lane.control_socket), self._control)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, self.request_stop)
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGHUP, lambda: rules.reload_file(cfg.rules.path))
        metrics_server = metrics.start_metrics_server(cfg.metrics.listen)
        scheduler = self._scheduler(store)
        # fed only while the lane loop makes progress: its heartbeat no older than one
        # watchdog interval (the loop stamps it at least every 0.5 s), and not stuck deciding
        interval = notify.watchdog_interval()
        max_age = max(1.5, interval) if interval is not None else 10.0
        watchdog = notify.Watchdog(lambda: runner.alive(max_age))
        try:
            control.claim()  # before any device: a second lane on this socket stops here
            await devices.start()
            await plates.start()
            await runner.start()
            await control.start()
            scheduler.start()
            watchdog.start()
            if sync is not None:
                sync.start()
            notify.ready(f"lane {cfg.lane.id} ({cfg.lane.direction}) running")
            log.info(
                "lane %s (%s) running, rules %s",
                cfg.lane.id,
                cfg.lane.direction,
                rules.current().version,
            )
            await self._stop.wait()
        finally:
            notify.stopping()
            watchdog.stop()
            if sync is not None:
                with contextlib.suppress(Exception):
                    sync.stop()
            with contextlib.suppress(Exception):
                scheduler.shutdown(wait=False)
            await control.stop()
            await runner.stop()
            with contextlib.suppress(Exception):
                await plates.stop()
            with contextlib.suppress(Exception):
                await devices.close()
            if metrics_server is not None:
                metrics_server.shutdown()
            store.close()
            log.info("lane %s stopped", cfg.lane.id)

    def _open_store(self) -> Store:
        """Check the ledger against its high-water mark before anything writes to it."""
        cfg = self.cfg
        try:
            res = check_ledger(cfg.storage.path, cfg.lane.id, mode=cfg.storage.startup_check)
        except LedgerDamaged:
            notify.status("ledger damaged: not starting (parkedge ledger recover)")
            raise
        log.info("ledger check (%s): lane %s at seq %d, quick_check %.0f ms, chain %.0f ms "
                 "(%d entries re-hashed)", cfg.storage.startup_check, cfg.lane.id, res.entries,
                 res.quick_check_ms, res.chain_ms, res.verified)
        return Store.open(cfg.storage.path, cfg.lane.id)

    def _pending(self) -> PendingRecords:
        """Where records wait while the ledger cannot be written (edge.store.pending)."""
        cfg = self.cfg
        directory = cfg.storage.pending_dir
        if directory is not None:
            with contextlib.suppress(OSError):
                directory.mkdir(parents=True, exist_ok=True)
                if os.stat(directory).st_dev == os.stat(cfg.storage.path.parent).st_dev:
                    log.warning("storage.pending_dir %s is on the ledger's filesystem: when "
                                "that is full, a manual open is kept only in memory and the "
                                "log", directory)
        try:
            return PendingRecords(directory, cfg.lane.id)
        except OSError as exc:
            log.error("storage.pending_dir %s unreadable (%s): pending records in memory only",
                      directory, exc)
            return PendingRecords(None, cfg.lane.id)

    def _sync(self, store: Store, rules: RulesHolder) -> Any:
        """Store-and-forward to central (edge.sync), when enabled: the ledger is its outbox,
        signed rule bundles from central are offered to the rules holder."""
        if not self.cfg.sync.enabled:
            return None
        from edge.sync import LaneSync

        self.sync = LaneSync.from_config(
            self.cfg.sync, store, site=self.cfg.lane.site, on_rules=rules.offer
        )
        return self.sync

    def _count(self, decision: m.Decision, read: PlateRead) -> None:
        if self.sync is not None:
            self.sync.notify()  # new ledger entries: send them now rather than at the next poll
        if decision.outcome == "entry_opened":
            metrics.SESSIONS_OPENED.inc()
        elif decision.outcome in ("exit_paid", "exit_owed"):
            metrics.EXITS.inc()

    def _scheduler(self, store: Store) -> Any:
        """Periodic jobs: heartbeat status, WAL checkpoint, prepayment and crop retention."""
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        sched = AsyncIOScheduler(timezone=self.tz)

        def heartbeat() -> None:
            if self.runner is not None:
                st = self.runner.status()
                metrics.set_lane_state(st["state"])
                notify.status(f"{st['state']}; plates {st['plates']}; faults {st['faults']}")

        sched.add_job(heartbeat, "interval", seconds=30, id="heartbeat")
        sched.add_job(store.checkpoint, "interval", minutes=10, id="wal-checkpoint")

        def prepaid_retention() -> None:
            from edge.store import prepayments

            n = prepayments.prune(store, self.clock.now())
            if any(n.values()):
                log.info("prepayment retention: deleted %(prepayments)d prepayments and "
                         "%(revocations)d revocations past their guard time", n)

        sched.add_job(prepaid_retention, "interval", hours=6, id="prepaid-retention",
                      next_run_time=datetime.now(self.tz) + timedelta(seconds=60))
        if self.cfg.camera.source == "stream" and self.cfg.lpr.keep_crops_days >= 0:

            def purge() -> None:
                from edge.lpr.retention import purge_old_crops

                n = purge_old_crops(
                    Path(self.cfg.lpr.crops_dir), self.cfg.lpr.keep_crops_days, self.clock.now()
                )
                if n:
                    log.info(
                        "deleted %d plate crops older than %d days", n, self.cfg.lpr.keep_crops_days
                    )

            sched.add_job(
                purge,
                "interval",
                hours=1,
                id="crop-retention",
                next_run_time=datetime.now(self.tz) + timedelta(seconds=30),
            )
        return sched

    async def _control(self, req: dict[str, Any]) -> dict[str, Any]:
        runner = self.runner
        if runner is None:
            return {"ok": False, "error": "lane not running yet"}
        cmd = req.get("cmd")
        if cmd == "status":
            return {"ok": True, **runner.status()}
        if cmd == "open":
            reason = str(req.get("reason", "")).strip()
            if not reason:
                return {"ok": False, "error": "a manual open needs --reason"}
            runner.operator_open(reason, str(req.get("operator") or "operator"))
            return {"ok": True, "opened": True}
        if cmd == "plate":
            who = str(req.get("operator") or "operator")
            read = self.manual.submit(str(req.get("plate") or ""), self.clock.now(), who)
            return {"ok": True, "plate": read.plate}
        if cmd == "clock":
            # bench/demo only: set the lane's event clock (what a push camera's timestamp does)
            if not self.clock.use_events:
                return {"ok": False, "error": "lane.clock is \"system\": the clock is not set"}
            at = datetime.fromisoformat(str(req.get("at") or ""))
            if at.tzinfo is None:
                raise ValueError("at must carry a UTC offset, e.g. 2026-11-17T10:05:00+08:00")
            self.clock.observe(at)
            return {"ok": True, "now": self.clock.now().isoformat()}
        if cmd == "pay":
            session_id = str(req.get("session_id") or "")
            if not session_id and runner.lane.current:
                session_id = runner.lane.current.session_id or ""
            if not session_id:
                return {"ok": False, "error": "no session is waiting for payment"}
            try:
                amount = Decimal(str(req["amount"]))
            except (KeyError, InvalidOperation) as exc:
                raise ValueError("amount must be a decimal, e.g. 12.50") from exc
            method = str(req.get("method") or "cash")
            idem = str(req.get("idem_key") or f"{session_id}:{method}:{amount}")
            runner.payment(session_id, amount, method, idem)
            return {"ok": True, "session_id": session_id}
        return {"ok": False, "error": f"unknown command {cmd!r}"}


def run_lane(cfg: Config) -> None:
    """Run until stopped; a damaged ledger exits with ``EXIT_LEDGER_DAMAGED`` (65)."""
    try:
        asyncio.run(LaneApp(cfg).run())
    except LedgerDamaged as exc:
        log.critical("%s", exc, extra={"problems": exc.problems})
        print(f"parkedge: {exc}", file=sys.stderr)
        for p in exc.problems:
            print(f"  - {p}", file=sys.stderr)
        print("The lane does not start on a ledger that lost entries. Keep the file; recover "
              "with `parkedge ledger recover` (docs/ledger.md, 'Recovering a damaged "
              "ledger').", file=sys.stderr)
        sys.exit(EXIT_LEDGER_DAMAGED)
