"""The plate CRNN's vote on a PP-OCR read (#15): agreement keeps the read's confidence,
disagreement lowers it so the lane's safe policy takes the car, and a character is only
overturned into a valid plate."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from edge.lpr.grammar import cn_grammar, latin_grammar
from edge.lpr.pipeline import PlateCandidate
from edge.lpr.second_opinion import SecondOpinion, second_opinion
from edge.lpr.voting import Vote

ROOT = Path(__file__).resolve().parents[2]
CN = cn_grammar()


def test_agreement_leaves_the_read_and_its_confidence() -> None:
    op = second_opinion("皖A12345", [0.99] * 7, "皖A12345", [0.6] * 7, CN, weight=0.25)
    assert op.plate == "皖A12345" and op.disagreed == ()
    assert op.confidence == pytest.approx(0.99)


def test_a_sure_disagreement_makes_a_sure_read_uncertain() -> None:
    # PP-OCR's S at 0.95 where the CRNN, sure, reads 5: below the lane's 0.8
    probs = [0.99, 0.99, 0.95, 0.99, 0.99, 0.99, 0.99]
    op = second_opinion("皖AS2345", probs, "皖A52345", [0.99] * 7, CN, weight=0.5)
    assert op.plate == "皖AS2345" and op.disagreed == (2,)
    assert op.confidence < 0.8
    # a faint disagreement costs little
    faint = second_opinion("皖AS2345", probs, "皖A52345", [0.99, 0.99, 0.2, 0.99, 0.99, 0.99,
                                                           0.99], CN, weight=0.25)
    assert faint.confidence > 0.8


def test_the_crnn_overturns_an_unsure_character_only_into_a_valid_plate() -> None:
    br = latin_grammar(["LLLDDDD", "LLLDLDD"])
    # PP-OCR unsure of the 5th (B 0.3 / Mercosul letter), the CRNN sure of 8: a valid old plate
    op = second_opinion("ABC1B23", [0.99, 0.99, 0.99, 0.99, 0.3, 0.99, 0.99], "ABC1823",
                        [0.99] * 7, br, weight=1.0)
    assert op.plate == "ABC1823"
    assert op.confidence < 0.8  # overturned: still a read for the operator to confirm
    # the lane's setting: doubt only, PP-OCR's read stands with its lower figure
    kept = second_opinion("ABC1B23", [0.99, 0.99, 0.99, 0.99, 0.3, 0.99, 0.99], "ABC1823",
                          [0.99] * 7, br, weight=1.0, overturn=False)
    assert kept.plate == "ABC1B23" and kept.confidence < 0.3
    # the CRNN's character is not legal there: no vote for it
    op = second_opinion("ABC1234", [0.99, 0.99, 0.3, 0.99, 0.99, 0.99, 0.99], "AB81234",
                        [0.99] * 7, br, weight=1.0)
    assert op.plate == "ABC1234"


def test_a_read_of_another_length_has_no_say() -> None:
    op = second_opinion("皖A12345", [0.97] * 7, "皖A1234", [0.99] * 6, CN)
    assert op.plate == "皖A12345" and op.confidence == pytest.approx(0.97)


def test_the_lane_vote_with_the_committed_model_on_a_drawn_plate() -> None:
    sys.path.insert(0, str(ROOT))
    from lpr_train import synth

    crop = np.clip(synth.draw_plate("cn_blue", "皖A12345", np.random.default_rng(1), 0.42)
                   .image, 0, 255).astype(np.uint8)
    opinion = SecondOpinion(CN)
    assert opinion._rec.read([crop], CN)[0].text == "皖A12345"

    def vote_for(plate: str) -> tuple[Vote, PlateCandidate]:
        v = Vote(plate, 0.97, 3, "blue", ())
        c = PlateCandidate(plate, plate, 0.97, True, "blue", (0, 0, 1, 1), (), crop)
        return v, c

    right = opinion.apply(*vote_for("皖A12345"))
    assert right.plate == "皖A12345" and right.confidence == pytest.approx(0.97)
    wrong = opinion.apply(*vote_for("皖A12845"))  # PP-OCR's 8 where the plate has a 3
    assert wrong.confidence < 0.8
    # the early accept's question: did the CRNN read every character the same?
    assert opinion.judge(*vote_for("皖A12345")).agreed
    assert not opinion.judge(*vote_for("皖A12845")).agreed
    assert not opinion.judge(*vote_for("皖A1234")).agreed  # another length: no agreement
