"""Load and validate a controller config; turn every failure into ``ConfigError``.

``load_config`` never raises anything else for a bad file (missing, unreadable, not TOML,
wrong values), so ``check-config`` and the daemon can print the list and exit cleanly.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from edge.config.errors import ConfigError, CrossFieldErrors
from edge.config.models import Config

_MESSAGES = {
    "missing": "missing required key",
    "extra_forbidden": "unknown key (not allowed here; check the spelling)",
}


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _is_section(loc: tuple[int | str, ...]) -> bool:
    """Whether ``loc`` names a table (a nested model) rather than a plain key."""
    model: Any = Config
    parts = list(loc)
    while parts:
        fields = getattr(model, "model_fields", None)
        part = parts.pop(0)
        if fields is None or part not in fields:
            return False
        ann = fields[part].annotation
        if get_origin(ann) is dict:
            if not parts:
                return True
            parts.pop(0)  # the table name, e.g. "io" in buses.io
            ann = get_args(ann)[1]
        model = ann
    return isinstance(model, type) and issubclass(model, BaseModel)


def _reason(err: Mapping[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "missing" and _is_section(tuple(err.get("loc", ()))):
        return "missing required section"
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    msg = str(err.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    if kind.endswith(("_type", "_parsing", "_mismatch")) or kind.startswith(
        ("literal_", "greater", "less", "too_")
    ):
        got = err.get("input")
        if not isinstance(got, dict | list):
            msg += f" (got {got!r})"
    return msg


def errors_from_validation(exc: ValidationError) -> list[tuple[str, str]]:
    """Flatten a pydantic ValidationError into (key path, reason), expanding cross-field errors."""
    out: list[tuple[str, str]] = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, CrossFieldErrors):
            for sub, reason in cause.errors:
                out.append((_key_path(loc) + ("." if loc else "") + sub, reason))
            continue
        out.append((_key_path(loc), _reason(err)))
    return out


def parse_config(data: Mapping[str, Any], base_dir: Path | None = None) -> Config:
    """Validate already-parsed TOML data; relative paths resolve against ``base_dir``."""
    if not isinstance(data, Mapping):
        raise ConfigError([("", "the config must be a table of sections")])
    try:
        return Config.model_validate(
            dict(data), context={"base_dir": base_dir} if base_dir else None
        )
    except ValidationError as exc:
        raise ConfigError(errors_from_validation(exc)) from None


def parse_toml(text: str, base_dir: Path | None = None) -> Config:
    """Parse TOML text (syntax errors name line and column) and validate it."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        where = f"line {m.group(1)}, column {m.group(2)}" if m else "unknown position"
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", msg) or "invalid TOML"
        raise ConfigError([("toml", f"syntax error at {where}: {reason}")]) from None
    return parse_config(data, base_dir=base_dir)


def load_config(path: str | Path) -> Config:
    """Read and validate one controller's TOML file; raises ConfigError only."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError([("file", f"{p} does not exist")]) from None
    except IsADirectoryError:
        raise ConfigError([("file", f"{p} is a directory, not a TOML file")]) from None
    except OSError as exc:
        raise ConfigError([("file", f"{p} cannot be read: {exc.strerror}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([("file", f"{p} is not UTF-8 (byte {exc.start})")]) from None
    return parse_toml(text, base_dir=p.resolve().parent)
