"""The shared field limits (edge.fields): what a plate and an id may be."""

import pytest

from edge.fields import (
    PLATE_MAX_CHARS,
    FieldError,
    check_id,
    check_plate,
    is_plate,
    normalise_plate,
)


@pytest.mark.parametrize("plate", ["沪A12345", "粤BD12345", "ABC1234", "RK099AN", "京A1234警"])
def test_real_plates_pass(plate: str) -> None:
    assert check_plate(plate) == plate


@pytest.mark.parametrize("plate", [
    "", "A" * (PLATE_MAX_CHARS + 1), "沪A 12345", "沪a12345", "A'; DROP", "<b>A1</b>",
    "A\x00B", "A\u202eB", "😀A1",
])
def test_bad_plates_refused(plate: str) -> None:
    with pytest.raises(FieldError):
        check_plate(plate)
    assert not is_plate(plate)


def test_non_string_refused() -> None:
    with pytest.raises(FieldError, match="expected a string"):
        check_plate(12345)


def test_normalise_then_check() -> None:
    assert check_plate(normalise_plate("ｓｈ-a 12·345")) == "SHA12345"


@pytest.mark.parametrize("value", ["entry-1", "M1", "entry-1:41", "ev-123", "a" * 64])
def test_ids_pass(value: str) -> None:
    assert check_id(value) == value


@pytest.mark.parametrize("value", ["", "a" * 65, "lane/1", "lane+", "#", "a b", "ü", None])
def test_bad_ids_refused(value: object) -> None:
    with pytest.raises(FieldError):
        check_id(value, "lane")
