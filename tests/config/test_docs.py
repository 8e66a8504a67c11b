"""docs/config.md lists every config key, so the reference cannot drift from the models."""

from __future__ import annotations

from pathlib import Path
from typing import get_args, get_origin

from pydantic import BaseModel

from edge.config import Config

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def key_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    out: list[str] = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += key_paths(ann, f"{prefix}{name}.")
        elif get_origin(ann) is dict:
            out += key_paths(get_args(ann)[1], f"{prefix}{name}.NAME.")
        else:
            out.append(prefix + name)
    return out


def test_every_key_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    paths = key_paths(Config)
    assert len(paths) > 60
    missing = [p for p in paths if f"`{p}`" not in text]
    assert missing == []


def test_every_field_has_a_description() -> None:
    def walk(model: type[BaseModel]) -> list[str]:
        bad = []
        for name, field in model.model_fields.items():
            if not field.description:
                bad.append(f"{model.__name__}.{name}")
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                bad += walk(ann)
            elif get_origin(ann) is dict:
                bad += walk(get_args(ann)[1])
        return bad

    assert walk(Config) == []
