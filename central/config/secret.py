"""Central's secrets: read from a file (owner-only mode) or the environment, never inline.

Central holds database passwords and the signing key of a whole site, so unlike the lane
config a literal in the TOML is refused: the file would end up in backups and tickets.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema


class SecretError(Exception):
    """A secret could not be read (unset variable, missing, empty or too-open file)."""


def file_mode_problem(path: Path) -> str | None:
    """Why ``path`` may not hold a secret, or None (a regular file, mode 0600 or 0400)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return f"secret file {path} does not exist"
    except OSError as exc:
        return f"secret file {path} cannot be read: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return f"secret file {path} is not a regular file"
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        return (f"secret file {path} is readable by group/others (mode {mode:04o}); "
                f"it must be 0600 or 0400 (chmod 600 {path})")
    return None


class Secret:
    """``{file = "/path"}`` or ``{env = "NAME"}``; ``get()`` reads it, nothing prints it."""

    __slots__ = ("kind", "ref")

    def __init__(self, kind: str, ref: str) -> None:
        self.kind = kind
        self.ref = ref

    def get(self) -> str:
        if self.kind == "env":
            value = os.environ.get(self.ref)
            if not value:
                raise SecretError(f"environment variable {self.ref} is not set or empty")
            return value
        path = Path(self.ref)
        problem = file_mode_problem(path)
        if problem:
            raise SecretError(problem)
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretError(f"secret file {path} cannot be read: {exc}") from None
        if not text:
            raise SecretError(f"secret file {path} is empty")
        return text

    def problem(self) -> str | None:
        try:
            self.get()
        except SecretError as exc:
            return str(exc)
        return None

    def __repr__(self) -> str:
        return f"Secret({self.kind}={self.ref!r})"

    @classmethod
    def _validate(cls, value: Any) -> Secret:
        if isinstance(value, Secret):
            return value
        if isinstance(value, dict) and len(value) == 1:
            ((kind, ref),) = value.items()
            if kind in ("env", "file") and isinstance(ref, str) and ref:
                return cls(kind, str(Path(ref).expanduser()) if kind == "file" else ref)
        if isinstance(value, str):
            raise ValueError('secrets are not written inline: use {file = "/path"} (mode 0600) '
                             'or {env = "VARIABLE"}')
        raise ValueError('a secret must be {file = "/path"} or {env = "VARIABLE"}')

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler
                                     ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda s: {s.kind: s.ref}, when_used="always"))
