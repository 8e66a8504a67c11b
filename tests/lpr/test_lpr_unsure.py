"""bench/lpr_unsure.py: exact, sure-but-wrong and unsure reads of a labelled folder, counted
with the real recogniser on simulator frames (one of them labelled with another plate)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import cv2
from parkedge_sim.render import Scene, render_frame

BENCH = Path(__file__).resolve().parents[2] / "bench" / "lpr_unsure.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lpr_unsure", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_set(folder: Path) -> None:
    folder.mkdir()
    rows = ["file,plate"]
    # two plain, head-on plates labelled right; the third labelled with a plate it is not
    for i, (shown, label) in enumerate((("沪A12345", "沪A12345"), ("京N8P8F8", "京N8P8F8"),
                                        ("苏E6J235", "苏E6J238"))):
        cv2.imwrite(str(folder / f"{i}.png"),
                    render_frame(shown, Scene(width=1280, height=720, plate_width=300, seed=i)))
        rows.append(f"{i}.png,{label}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def test_counts_exact_sure_wrong_and_unsure(tmp_path: Path) -> None:
    write_set(tmp_path / "sim")
    r = load_bench().count_set(tmp_path / "sim", "cn", 0.8)
    assert r["n"] == 3
    assert r["exact"] == 2, r  # the two labelled right are read right
    # the mislabelled one is wrong: either sure (what a lane would act on) or unsure
    wrong_unsure = r["unsure"] - r["unsure_right"]
    assert r["sure_wrong"] + wrong_unsure == 1, r
    assert len(r["sure_wrong_reads"]) == r["sure_wrong"]
    if r["sure_wrong"]:
        assert r["sure_wrong_reads"][0]["plate"] == "苏E6J238"
        assert r["sure_wrong_reads"][0]["read"] == "苏E6J235"
    assert r["exact_share"] == round(2 / 3, 4)
    # an impossible threshold: nothing is sure, every read counts as unsure
    none_sure = load_bench().count_set(tmp_path / "sim", "cn", 1.01)
    assert none_sure["sure_wrong"] == 0 and none_sure["unsure"] == 3
    assert none_sure["unsure_right"] == none_sure["exact"] == 2


def test_cli_json_and_unknown_set(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_set(data / "cn_full")
    out = subprocess.run([sys.executable, str(BENCH), "--data", str(data), "--sets", "cn_full",
                          "--json"], capture_output=True, text=True, timeout=300, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert list(res["sets"]) == ["cn_full"] and res["sets"]["cn_full"]["exact"] == 2
    bad = subprocess.run([sys.executable, str(BENCH), "--sets", "us"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode != 0 and "unknown set" in bad.stderr
