"""``parkedge lpr read`` and ``lpr eval`` on a folder the simulator renders."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import pytest
from parkedge_sim.render import Scene, render_frame, render_plate
from typer.testing import CliRunner

import edge.cli.lpr  # noqa: F401  (registers the sub-command)
from edge.cli import app

PLATES = ["沪A12345", "京N7K2P9", "浙A8M6T1"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("lprset")
    rows = []
    for i, p in enumerate(PLATES):
        frame = render_frame(p, Scene(width=1280, height=720, plate_width=240, seed=i))
        cv2.imwrite(str(d / f"f{i}.jpg"), frame)
        rows.append([f"f{i}.jpg", p])
    cv2.imwrite(str(d / "crop.png"), render_plate("粤B12345", height=32))
    rows.append(["crop.png", "粤B12345"])
    with (d / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "plate", "x", "y", "w", "h"])
        w.writerows(rows)
    return d


def test_eval_json_is_one_object(folder: Path) -> None:
    res = CliRunner().invoke(app, ["lpr", "eval", str(folder), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert set(data) == {"n", "exact", "char_acc", "p50_ms", "p95_ms", "rss_mb"}
    assert data["n"] == 4
    assert data["exact"] >= 0.75
    assert data["char_acc"] >= data["exact"]
    assert 0 < data["p50_ms"] <= data["p95_ms"]
    assert data["rss_mb"] > 50


def test_read_json(folder: Path) -> None:
    res = CliRunner().invoke(app, ["lpr", "read", str(folder / "f0.jpg"), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["plate"] == "沪A12345"
    assert data["valid"] and 0 < data["confidence"] <= 1
    assert isinstance(data["candidates"], list) and "at" in data


def test_read_bad_file_fails_with_its_name(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    res = CliRunner().invoke(app, ["lpr", "read", str(bad), "--json"])
    assert res.exit_code == 1
    assert "not a readable image" in json.loads(res.stdout)["error"]


def test_eval_without_labels_is_a_clear_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["lpr", "eval", str(tmp_path)])
    assert res.exit_code == 2
    assert "no labels.csv" in res.output


def test_eval_bad_label_row_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("file,plate\nonly-a-file\n")
    res = CliRunner().invoke(app, ["lpr", "eval", str(tmp_path)])
    assert res.exit_code == 2
    assert "labels.csv:2" in res.output


def test_eval_folded_adds_one_key_and_fold_is_o0_i1(folder: Path) -> None:
    from edge.lpr.evaluate import fold_confusables

    assert fold_confusables("RKO99AI") == "RK099A1"
    res = CliRunner().invoke(app, ["lpr", "eval", str(folder), "--json", "--folded"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["exact_folded"] >= data["exact"]


def _crops_with_a_wrong_label(d: Path) -> Path:
    """Two rendered crops; the second one's label is wrong (the plate shows 粤B12345)."""
    for name, plate in (("a.png", "沪A12345"), ("b.png", "粤B12345")):
        cv2.imwrite(str(d / name), render_plate(plate, height=32))
    (d / "labels.csv").write_text("file,plate\na.png,沪A12345\nb.png,粤B1234S\n", "utf-8")
    return d


def test_eval_corrections_score_against_the_plate_and_keep_the_labelled_figure(
    tmp_path: Path,
) -> None:
    d = tmp_path / "set"
    d.mkdir()
    _crops_with_a_wrong_label(d)
    fixes = tmp_path / "fixes.csv"
    fixes.write_text(
        "folder,file,labelled,seen,why\n"
        "# comment rows are skipped\n"
        "set,b.png,粤B1234S,粤B12345,the last group is digits\n"
        "other,b.png,X,Y,another folder's row is ignored\n",
        "utf-8",
    )
    plain = CliRunner().invoke(app, ["lpr", "eval", str(d), "--json"])
    assert plain.exit_code == 0, plain.output
    assert json.loads(plain.stdout)["exact"] == 0.5
    res = CliRunner().invoke(app, ["lpr", "eval", str(d), "--json", "--corrections", str(fixes)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert (data["exact"], data["exact_as_labelled"], data["labels_corrected"]) == (1.0, 0.5, 1)


def test_eval_stale_correction_is_an_error(tmp_path: Path) -> None:
    d = tmp_path / "set"
    d.mkdir()
    _crops_with_a_wrong_label(d)
    fixes = tmp_path / "fixes.csv"
    fixes.write_text("folder,file,labelled,seen,why\nset,b.png,粤B99999,粤B12345,x\n", "utf-8")
    res = CliRunner().invoke(app, ["lpr", "eval", str(d), "--corrections", str(fixes)])
    assert res.exit_code == 2
    assert "b.png" in res.output and "粤B1234S" in res.output
