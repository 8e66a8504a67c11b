"""Plate-recognition bench: ``parkedge lpr eval`` on every folder of the shared data sets, the
simulator's 1080p frames, and the bare OCR engine on ground-truth crops (the ceiling).

Each eval runs in its own process pinned to one core (``taskset -c 0`` when available), so the
p50/p95 are one-core figures and the peak RSS is that process's. Usage:

    .venv/bin/python bench/lpr.py [--data ../shared/lpr-data] [--sim 200] [--out bench-lpr.json]

Wrong labels in the shared data sets are corrected from ``bench/lpr_label_fixes.csv`` (each row
says what the label says, what the plate shows and why; ``edge/lpr/evaluate.py``): the exact
figure is against the corrected labels, and the table shows the as-labelled figure beside it.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import multiprocessing
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "hardware-sim")]
LABEL_FIXES = ROOT / "bench" / "lpr_label_fixes.csv"

GRAMMAR = {
    "cn_crops": "cn",
    "cn_full": "cn",
    "sim_1080p": "cn",
    "us": "latin",
    "eu": "latin",
    "br": "latin:LLLDDDD,LLLDLDD",  # a Brazilian site configures its layouts (old + Mercosul)
}
# The same folder read as a site configured for its countries reads it: the EU set is nearly
# all Slovak and Czech plates, whose layouts and issued letters (edge/lpr/eu_plates.py) settle
# O/0 and I/1 by position.
EXTRA = {"eu_sk_cz": ("eu", "eu:sk,cz")}
GOALS = {
    "cn_crops": 0.99,
    "cn_full": 0.95,
    "sim_1080p": 0.95,
    "eu": 0.90,
    "eu_sk_cz": 0.90,
    "br": 0.90,
}
# issue #7: full frames read in at most 60 ms (p50, one core); the whole daemon in 350 MB
P50_GOAL_MS = {"cn_full": 60.0}
DAEMON_RSS_GOAL_MB = 350.0


def run_eval(folder: Path, grammar: str, one_core: bool) -> dict[str, float]:
    cmd = [
        sys.executable,
        "-c",
        "from edge.cli import main; main()",
        "lpr",
        "eval",
        str(folder),
        "-g",
        grammar,
        "--json",
        "--folded",
        "--corrections",
        str(LABEL_FIXES),
    ]
    result: dict[str, float] = _run_pinned(cmd, f"eval of {folder}", one_core)
    return result


def _run_pinned(cmd: list[str], what: str, one_core: bool) -> Any:
    """Run ``cmd`` in its own process (on core 0 when asked and ``taskset`` exists) and parse
    the JSON object on its last line of output."""
    if one_core and shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"{what} failed: {out.stderr[-1000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


CALIBRATED = ("cn_crops", "cn_full", "sim_1080p", "eu_sk_cz")
THRESHOLDS = (0.5, 0.8, 0.9)


def run_calibration(folder: Path, grammar: str, one_core: bool) -> dict[str, Any]:
    """Right and wrong reads at or above each confidence threshold (its own pinned process)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--calibrate", str(folder), grammar]
    result: dict[str, Any] = _run_pinned(cmd, f"calibration of {folder}", one_core)
    return result


def _calibrate_one(folder: Path, grammar: str) -> None:
    from edge.lpr.evaluate import calibration, evaluate_dir, read_corrections
    from edge.lpr.grammar import grammar_by_name
    from edge.lpr.pipeline import Recogniser

    report = evaluate_dir(folder, Recogniser(grammar_by_name(grammar)),
                          corrections=read_corrections(LABEL_FIXES, folder.name))
    print(json.dumps(calibration(report.reads, THRESHOLDS)))


def _score_crops(folder: Path, read: Callable[[Any], str],
                 digits: int) -> dict[str, float] | None:
    """``read`` on each labelled box of ``folder`` (the whole image for crop sets), labels
    corrected as everywhere in this bench: exact share and p50 of ``read`` alone."""
    from edge.lpr.evaluate import apply_corrections, read_corrections, read_labels
    from edge.lpr.pipeline import load_image

    ok = n = 0
    times = []
    labels = apply_corrections(read_labels(folder), read_corrections(LABEL_FIXES, folder.name))
    for label in labels:
        try:
            img = load_image(folder / label.file)
        except ValueError:
            n += 1
            continue
        if label.box:
            x, y, w, h = label.box
            img = img[max(0, y) : y + h, max(0, x) : x + w]
            if img.shape[0] < 4 or img.shape[1] < 4:
                n += 1
                continue
        elif folder.name != "cn_crops":
            continue
        t0 = time.perf_counter()
        got = read(img)
        times.append((time.perf_counter() - t0) * 1000)
        n += 1
        ok += got == label.plate
    if not n:
        return None
    return {"n": n, "exact": round(ok / n, 4),
            "p50_ms": round(statistics.median(times), digits)}


def ocr_ceiling(folder: Path, grammar: str) -> dict[str, float] | None:
    """The bare OCR engine on the labelled boxes (or the whole image for crop sets)."""
    from edge.lpr.grammar import grammar_by_name
    from edge.lpr.pipeline import Recogniser

    rec = Recogniser(grammar_by_name(grammar), detector=False)  # crops only: no finding
    return _score_crops(folder, lambda img: rec.read_crop(img).plate, 1)


def plate_rec_alone(folder: Path) -> dict[str, float] | None:
    """The plate-specific recogniser (``edge/lpr/plate_rec.py``, #15) alone on the same
    ground-truth crops as ``ocr_ceiling`` (labels corrected the same way), no grammar: what
    the network reads. Two-row plates are not split here."""
    from edge.lpr.plate_rec import PlateRecogniser

    rec = PlateRecogniser()
    return _score_crops(folder, lambda img: rec.read([img])[0].text, 2)


def _plate_rec_table(data: Path) -> dict[str, Any]:
    """One row per folder: the plate recogniser alone on its ground-truth crops."""
    out: dict[str, Any] = {}
    for folder in sorted(data.iterdir()):
        if (folder / "labels.csv").is_file():
            r = plate_rec_alone(folder)
            if r is not None:
                out[folder.name] = r
    return out


def _prefix(rnd: random.Random, provinces: list[str]) -> str:
    """A random province and one of the city letters it issues (A..K where it has them): the
    same draws as before the city-letter table, so only impossible plates (宁K) change."""
    from edge.lpr.grammar import CN_CITY_LETTERS

    prov, k = rnd.choice(provinces), rnd.randrange(10)
    legal = [c for c in "ABCDEFGHJK" if c in CN_CITY_LETTERS[prov]]
    return prov + ("ABCDEFGHJK"[k] if "ABCDEFGHJK"[k] in legal else legal[k % len(legal)])


def render_sim(dest: Path, count: int, seed: int = 7) -> Path:
    """1080p simulator frames of random valid plates under varied conditions."""
    import cv2
    from parkedge_sim.render import Scene, render_frame

    from edge.lpr.grammar import CN_ALNUM, CN_PROVINCES

    rnd = random.Random(seed)
    dest.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        p = _prefix(rnd, sorted(CN_PROVINCES))
        if rnd.random() < 0.15:
            p += rnd.choice("DF") + rnd.choice(sorted(CN_ALNUM)) + f"{rnd.randrange(10000):04d}"
        else:
            p += "".join(rnd.choice(sorted(CN_ALNUM)) for _ in range(5))
        scene = Scene(
            plate_width=rnd.randint(180, 360),
            yaw=rnd.uniform(-0.5, 0.5),
            tilt_deg=rnd.uniform(-5, 5),
            brightness=rnd.uniform(0.55, 1.3),
            blur=rnd.choice([0, 0, 1, 2]),
            noise=rnd.uniform(2, 8),
            seed=i,
        )
        name = f"sim{i:03d}.jpg"
        cv2.imwrite(str(dest / name), render_frame(p, scene), [cv2.IMWRITE_JPEG_QUALITY, 90])
        rows.append((name, p))
    with (dest / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "plate", "x", "y", "w", "h"])
        for name, p in rows:
            w.writerow([name, p, "", "", "", ""])
    return dest


def _camera_process(commands: Any, ready: Any) -> None:
    """Child process: the simulated MJPEG camera, driven by (plate, width, yaw, seed) tuples."""
    sys.path[:0] = [str(ROOT), str(ROOT / "hardware-sim")]
    from parkedge_sim.mjpeg_stream import MjpegCamera
    from parkedge_sim.render import Scene

    with MjpegCamera(fps=15, scene=Scene(plate_width=260)) as cam:
        ready.put(cam.port)
        while (cmd := commands.get()) is not None:
            plate, width, yaw, seed = cmd
            cam.set_car(plate, Scene(plate_width=width, yaw=yaw, seed=seed))
            ready.put(seed)


def stream_bench(count: int, seed: int = 11) -> dict[str, float]:
    """End to end through the simulated camera: set the car, trigger, await the PlateRead."""
    import asyncio
    from zoneinfo import ZoneInfo

    from edge.lpr.evaluate import peak_rss_mb
    from edge.lpr.grammar import CN_ALNUM, CN_PROVINCES
    from edge.lpr.onbox_source import OnBoxPlateSource

    rnd = random.Random(seed)
    plates = [
        _prefix(rnd, sorted(CN_PROVINCES))
        + "".join(rnd.choice(sorted(CN_ALNUM)) for _ in range(5))
        for _ in range(count)
    ]

    # The camera runs in its own process so the peak RSS below is the reader's alone.
    ctx = multiprocessing.get_context("spawn")
    commands: multiprocessing.Queue[tuple[str, int, float, int] | None] = ctx.Queue()
    ready: multiprocessing.Queue[int] = ctx.Queue()
    cam_proc = ctx.Process(target=_camera_process, args=(commands, ready), daemon=True)
    cam_proc.start()
    port = ready.get(timeout=60)

    async def run() -> dict[str, float]:
        ok = uncertain = 0
        times = []
        src = OnBoxPlateSource(
            f"http://127.0.0.1:{port}/stream.mjpg",
            "BENCH",
            vote_frames=3,
            min_confidence=0.7,
            timeout_s=5.0,
            tz=ZoneInfo("Asia/Shanghai"),
            crops_dir=None,
        )
        await src.start()
        try:
            for i, plate in enumerate(plates):
                commands.put((plate, rnd.randint(200, 320), rnd.uniform(-0.4, 0.4), i))
                await asyncio.to_thread(ready.get, True, 30)  # the camera shows the new car
                await asyncio.sleep(0.2)
                t0 = time.perf_counter()
                src.trigger()
                try:
                    read = await asyncio.wait_for(src.get(), 10)
                except TimeoutError:
                    continue
                times.append((time.perf_counter() - t0) * 1000)
                ok += read.plate == plate and not read.uncertain
                uncertain += read.uncertain
        finally:
            await src.stop()
            commands.put(None)
            cam_proc.join(10)
        times.sort()
        return {
            "n": count,
            "exact_certain": round(ok / count, 4),
            "uncertain": uncertain,
            "p50_ms": round(statistics.median(times), 1) if times else 0.0,
            "max_ms": round(times[-1], 1) if times else 0.0,
            "rss_mb": round(peak_rss_mb(), 1),
        }

    return asyncio.run(run())


def _vm(pid: int, key: str) -> float:
    """VmHWM / VmRSS of a process in MB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def daemon_bench(cars: int) -> dict[str, float]:
    """The whole daemon (``parkedge run``, on-box camera config, pinned to one core) on an entry
    lane simulated at 1080p: drive ``cars`` cars through, then read its peak RSS (VmHWM)."""
    import asyncio
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from parkedge_sim.lane_config import BENCH_MEMBERS, seed_members, write_lane_config
    from parkedge_sim.lane_sim import LaneSim
    from parkedge_sim.render import Scene

    from edge.control import request

    logging.getLogger("pymodbus").setLevel(logging.WARNING)  # the sim's Modbus frame dumps
    tz = ZoneInfo("Asia/Shanghai")
    plates = [m.plate for m in BENCH_MEMBERS][:cars]

    async def run(tmp: Path) -> dict[str, float]:
        scene = Scene(width=1920, height=1080, plate_width=280)
        sim = LaneSim("E1", video=True, video_scene=scene, rise_s=0.1, fall_s=0.1, tz=tz)
        info = await sim.start()
        seed_members(tmp / "E1.db", datetime(2026, 11, 17, tzinfo=tz))
        cfg = write_lane_config(tmp, "E1", "entry", info)
        cmd = [sys.executable, "-m", "edge", "run", "--config", str(cfg)]
        if shutil.which("taskset"):
            cmd = ["taskset", "-c", "0", *cmd]
        log = (tmp / "E1.log").open("wb")
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp / "E1.log").read_text()[-2000:])
                try:
                    st = request(tmp / "E1.sock", {"cmd": "status"})
                    if st.get("state") == "idle":
                        break
                except (ConnectionError, OSError, ValueError):
                    pass
                await asyncio.sleep(0.2)
            idle_mb = _vm(proc.pid, "VmRSS")
            passed = 0
            times = []
            for i, plate in enumerate(plates):
                t0 = time.perf_counter()
                out = await sim.vehicle_arrives(
                    plate,
                    datetime(2026, 11, 17, 10, i, tzinfo=tz),
                    dwell_s=0.2,
                    open_timeout_s=10.0,
                )
                times.append((time.perf_counter() - t0) * 1000)
                passed += out.result == "passed"
            return {
                "cars": len(plates),
                "passed": passed,
                "arrive_to_passed_p50_ms": round(statistics.median(times), 1),
                "idle_rss_mb": round(idle_mb, 1),
                "peak_rss_mb": round(_vm(proc.pid, "VmHWM"), 1),
            }
        finally:
            proc.terminate()
            proc.wait(15)
            await sim.stop()

    with tempfile.TemporaryDirectory(prefix="lpr-daemon-") as tmp:
        return asyncio.run(run(Path(tmp)))


def _print_plate_rec(table: dict[str, Any]) -> None:
    print("\n| set | n | plate CRNN alone on GT crops (no grammar) | p50 ms |")
    print("|---|---|---|---|")
    for name, r in table.items():
        print(f"| {name} | {r['n']} | {r['exact']:.1%} | {r['p50_ms']} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "lpr-data")
    # 200: one frame is 0.5 %, so a 95 % goal is not decided by one or two frames
    ap.add_argument("--sim", type=int, default=200, help="simulator frames (0 to skip)")
    ap.add_argument("--stream", type=int, default=10, help="cars through the MJPEG simulator")
    ap.add_argument("--daemon", type=int, default=6, help="cars through a whole daemon (0: skip)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin evals to one core")
    ap.add_argument("--out", type=Path, help="also write the results as JSON here")
    ap.add_argument("--no-calibration", action="store_true", help="skip the confidence tables")
    ap.add_argument("--calibrate", nargs=2, metavar=("DIR", "GRAMMAR"), help=argparse.SUPPRESS)
    ap.add_argument("--plate-rec-only", action="store_true", help="only the plate CRNN table")
    args = ap.parse_args()
    if args.calibrate:
        _calibrate_one(Path(args.calibrate[0]), args.calibrate[1])
        return
    if args.plate_rec_only:
        _print_plate_rec(_plate_rec_table(args.data))
        return

    folders = [d for d in sorted(args.data.iterdir()) if (d / "labels.csv").is_file()]
    results: dict[str, dict[str, object]] = {}
    st: dict[str, float] | None = None
    if args.stream:  # first, while this process holds nothing else: its RSS is the reader's
        print("stream ...", file=sys.stderr, flush=True)
        st = stream_bench(args.stream)
        results["stream"] = {"pipeline": st, "ocr_on_truth_crops": None}
    dm: dict[str, float] | None = None
    if args.daemon:
        print("daemon ...", file=sys.stderr, flush=True)
        dm = daemon_bench(args.daemon)
        results["daemon"] = {"pipeline": dm, "ocr_on_truth_crops": None}
    calib: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="lpr-sim-") as tmp:
        if args.sim:
            folders.append(render_sim(Path(tmp) / "sim_1080p", args.sim))
        for folder in folders:
            grammar = GRAMMAR.get(folder.name, "cn")
            print(f"eval {folder.name} ({grammar}) ...", file=sys.stderr, flush=True)
            pipe = run_eval(folder, grammar, one_core=not args.no_pin)
            ceiling = ocr_ceiling(folder, grammar) if folder.name != "sim_1080p" else None
            results[folder.name] = {"pipeline": pipe, "ocr_on_truth_crops": ceiling}
            if folder.name in CALIBRATED and not args.no_calibration:
                calib[folder.name] = run_calibration(folder, grammar, not args.no_pin)
        for name, (src, grammar) in EXTRA.items():
            folder = args.data / src
            if not (folder / "labels.csv").is_file():
                continue
            print(f"eval {name} ({grammar}) ...", file=sys.stderr, flush=True)
            pipe = run_eval(folder, grammar, one_core=not args.no_pin)
            results[name] = {"pipeline": pipe, "ocr_on_truth_crops": ocr_ceiling(folder, grammar)}
            if name in CALIBRATED and not args.no_calibration:
                calib[name] = run_calibration(folder, grammar, not args.no_pin)

    print(
        "| set | n | exact | goal | exact O/0 I/1 folded | char acc | p50 ms | p95 ms "
        "| peak RSS MB | OCR on GT crops |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        if name in ("stream", "daemon", "calibration", "plate_rec_alone"):
            continue
        p = r["pipeline"]
        c = r["ocr_on_truth_crops"]
        assert isinstance(p, dict)
        goal = GOALS.get(name)
        p50_goal = f" (goal ≤ {P50_GOAL_MS[name]:.0f})" if name in P50_GOAL_MS else ""
        ceil = f"{c['exact']:.1%} ({c['p50_ms']} ms)" if isinstance(c, dict) else "-"
        fixed = (
            f" ({p['exact_as_labelled']:.1%} as labelled, {p['labels_corrected']} labels "
            "corrected)"
            if p.get("labels_corrected")
            else ""
        )
        print(
            f"| {name} | {p['n']} | {p['exact']:.1%}{fixed} | {f'{goal:.0%}' if goal else '-'} | "
            f"{p.get('exact_folded', 0):.1%} | "
            f"{p['char_acc']:.1%} | {p['p50_ms']}{p50_goal} | {p['p95_ms']} | {p['rss_mb']} | "
            f"{ceil} |"
        )
    if calib:
        print(
            "\n| set | right | wrong | "
            + " | ".join(f"≥ {t}: right, wrong" for t in THRESHOLDS)
            + " |"
        )
        print("|---|---|---|" + "---|" * len(THRESHOLDS))
        for name, cal in calib.items():
            cells = [
                f"{a['right_share']:.1%}, {a['wrong']}/{cal['wrong']}"
                for a in (cal["at"][str(t)] for t in THRESHOLDS)
            ]
            print(f"| {name} | {cal['right']} | {cal['wrong']} | " + " | ".join(cells) + " |")
        results["calibration"] = {"pipeline": calib, "ocr_on_truth_crops": None}
    if st is not None:
        print(
            f"\nMJPEG simulator → OnBoxPlateSource (3-frame vote): {st['n']} cars, "
            f"{st['exact_certain']:.0%} exact and certain, {st['uncertain']} uncertain, "
            f"trigger→read p50 {st['p50_ms']} ms, max {st['max_ms']} ms, peak RSS {st['rss_mb']} MB"
        )
    if dm is not None:
        print(
            f"whole daemon (parkedge run, on-box camera, one core, 1080p MJPEG lane): "
            f"{dm['passed']}/{dm['cars']} cars passed, arrival→passed p50 "
            f"{dm['arrive_to_passed_p50_ms']} ms, RSS idle {dm['idle_rss_mb']} MB, "
            f"peak (VmHWM) {dm['peak_rss_mb']} MB (goal ≤ {DAEMON_RSS_GOAL_MB:.0f})"
        )
    plate_rec = _plate_rec_table(args.data)
    _print_plate_rec(plate_rec)
    results["plate_rec_alone"] = {"pipeline": plate_rec, "ocr_on_truth_crops": None}
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
