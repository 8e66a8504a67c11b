"""The OCR engine on real rendered plates, its offline guarantee, and its input checks."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from parkedge_sim.render import render_plate

from edge.lpr.grammar import cn_grammar
from edge.lpr.ocr import RapidOcrEngine

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def engine() -> RapidOcrEngine:
    return RapidOcrEngine(cn_grammar().alphabet)


@pytest.mark.parametrize("plate", ["沪A12345", "粤B8Z2S5", "京A1234警", "苏EF12345", "浙C12345D"])
def test_reads_rendered_plate_crops(engine: RapidOcrEngine, plate: str) -> None:
    crop = render_plate(plate, height=48)
    (res,) = engine.read([crop])
    assert res.text == plate
    assert len(res.chars) == len(plate)
    assert 0.5 < res.confidence <= 1.0


def test_batch_keeps_order_and_blank_crop_reads_nothing(engine: RapidOcrEngine) -> None:
    blank = np.full((40, 130, 3), 128, np.uint8)
    results = engine.read([render_plate("沪A12345", height=40), blank, render_plate("京A88731")])
    assert [r.text for r in results][0::2] == ["沪A12345", "京A88731"]
    assert len(results[1].text) <= 1


def test_alphabet_mask_keeps_output_inside_grammar(engine: RapidOcrEngine) -> None:
    alphabet = cn_grammar().alphabet
    noise = np.random.default_rng(0).integers(0, 255, (48, 160, 3), dtype=np.uint8)
    for r in engine.read([noise, render_plate("沪A12345")]):
        assert set(r.text) <= alphabet


def test_bad_crop_is_named(engine: RapidOcrEngine) -> None:
    with pytest.raises(ValueError, match="OCR crop must be a BGR image"):
        engine.read([np.zeros((2, 2, 3), np.uint8)])
    assert engine.read([]) == []


def test_unknown_alphabet_character_is_refused() -> None:
    from edge.lpr.ocr import OcrError

    with pytest.raises(OcrError, match="cannot output"):
        RapidOcrEngine(["A", "\u2603"])


_PROBE = textwrap.dedent(
    """
    import socket, sys
    def refuse(*a, **k):
        raise RuntimeError("network access attempted")
    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse
    import rapidocr_onnxruntime  # the package's own import path too
    from edge.lpr.ocr import RapidOcrEngine
    from edge.lpr.grammar import cn_grammar
    from parkedge_sim.render import render_plate
    e = RapidOcrEngine(cn_grammar().alphabet)
    print(e.read([render_plate("沪A12345")])[0].text)
    """
)


def _run_probe(prefix: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PYTHONPATH": f"{ROOT}:{ROOT / 'hardware-sim'}", "PATH": "/usr/bin:/bin"},
    )


def test_engine_runs_with_sockets_refused() -> None:
    out = _run_probe([])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "沪A12345"


@pytest.mark.skipif(shutil.which("unshare") is None, reason="util-linux unshare not installed")
def test_engine_runs_in_a_namespace_without_network() -> None:
    check = subprocess.run(["unshare", "-rn", "true"], capture_output=True)
    if check.returncode != 0:
        pytest.skip("user namespaces not permitted here")
    out = _run_probe(["unshare", "-rn"])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "沪A12345"
