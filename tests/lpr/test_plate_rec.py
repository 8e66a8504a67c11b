"""The plate recogniser's runtime (#15): CTC decoding, the committed ONNX model (small, loads
with onnxruntime alone, reads clean plates), and no PyTorch at run time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.lpr.grammar import cn_grammar, latin_grammar
from edge.lpr.plate_rec import (
    ALPHABET,
    INPUT_H,
    INPUT_W,
    MODEL_PATH,
    PlateRecError,
    PlateRecogniser,
    ctc_decode,
    ctc_decode_constrained,
    normalise,
)

ROOT = Path(__file__).resolve().parents[2]


def _probs(steps: list[str]) -> np.ndarray:
    """T x C probabilities putting 0.9 on each step's character ('-' = blank)."""
    out = np.full((len(steps), len(ALPHABET) + 1), 0.1 / len(ALPHABET), np.float32)
    for t, ch in enumerate(steps):
        out[t, 0 if ch == "-" else ALPHABET.index(ch) + 1] = 0.9
    return out


def test_ctc_collapses_repeats_and_keeps_doubles_split_by_a_blank() -> None:
    # 皖皖 is one 皖; 1-1 (a blank between) is two 1s; 11 and 55 collapse
    read = ctc_decode(_probs(list("--皖皖-A-1-1155--")))
    assert read.text == "皖A115"
    assert len(read.probs) == 5 and read.confidence == pytest.approx(0.9)


def _with_runner_up(probs: np.ndarray, t: int, ch: str, p: float) -> np.ndarray:
    out = probs.copy()
    out[t, 0 if ch == "-" else ALPHABET.index(ch) + 1] = p
    return out


def test_constrained_decoding_takes_the_likeliest_plate_the_grammar_allows() -> None:
    # greedy reads an 8 where the city letter stands; the B was the model's second choice
    probs = _with_runner_up(_probs(list("-皖-8-1-2-3-4-5-")), 3, "B", 0.3)
    assert ctc_decode(probs).text == "皖812345"
    read = ctc_decode_constrained(probs, cn_grammar())
    assert read is not None and read.text == "皖B12345"
    assert read.probs[1] == pytest.approx(0.3)  # the doubt stays in the character's figure
    # a read the grammar allows as it stands is not changed
    ok = _probs(list("-皖-A-1-2-3-4-5-"))
    assert ctc_decode_constrained(ok, cn_grammar()).text == "皖A12345"  # type: ignore[union-attr]


def test_constrained_decoding_picks_the_layout_and_drops_a_spurious_character() -> None:
    # Brazil: LLLDDDD or LLLDLDD. An eighth character read faintly at the end is not a plate
    probs = _with_runner_up(_probs(list("-A-B-C-1-2-3-4-Z")), 15, "-", 0.45)
    assert ctc_decode(probs).text == "ABC1234Z"
    read = ctc_decode_constrained(probs, latin_grammar(["LLLDDDD", "LLLDLDD"]))
    assert read is not None and read.text == "ABC1234"


def test_normalise_makes_dark_and_bright_crops_alike() -> None:
    rng = np.random.default_rng(0)
    bright = rng.integers(100, 250, (1, INPUT_H, INPUT_W)).astype(np.uint8)
    dark = (bright // 4).astype(np.uint8)
    a, b = normalise(bright), normalise(dark)
    assert a.shape == (1, 1, INPUT_H, INPUT_W)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99


def test_a_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PlateRecError, match="not found"):
        PlateRecogniser(tmp_path / "none.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(PlateRecError, match="unreadable"):
        PlateRecogniser(bad)


def test_the_committed_model_is_small_and_gives_a_class_per_step() -> None:
    assert MODEL_PATH.is_file()
    assert MODEL_PATH.stat().st_size < 5 * 1024 * 1024
    rec = PlateRecogniser()
    probs = rec.probabilities([np.zeros((24, 94, 3), np.uint8), np.zeros((40, 160), np.uint8)])
    assert probs.shape[0] == 2 and probs.shape[2] == len(ALPHABET) + 1
    assert np.allclose(probs.sum(axis=2), 1.0, atol=1e-3)


def test_the_model_reads_clean_synthetic_plates() -> None:
    sys.path.insert(0, str(ROOT))
    from lpr_train import synth

    rng = np.random.default_rng(123)
    rec = PlateRecogniser()
    plates = [("cn_blue", "皖A12345"), ("cn_blue", "京P8B629"), ("cn_green", "粤BD12345")]
    plates += [("cn_yellow", "鲁C73K20"), ("eu_sk", "BA123AB"), ("br_mercosul", "ABC1D23")]
    crops = []
    for kind, text in plates:
        img = np.clip(synth.draw_plate(kind, text, rng, 0.42).image, 0, 255).astype(np.uint8)
        crops.append(img)
    reads = [r.text for r in rec.read(crops)]
    right = sum(r == t for r, (_, t) in zip(reads, plates, strict=True))
    assert right >= 5, reads


def test_the_runtime_needs_no_pytorch() -> None:
    code = (
        "import sys, numpy as np\n"
        "from edge.lpr.plate_rec import PlateRecogniser\n"
        "PlateRecogniser().read([np.zeros((24, 94, 3), np.uint8)])\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'lpr_train')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
