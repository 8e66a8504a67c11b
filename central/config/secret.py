"""Central's secrets: read from a file or the environment, never inline.

A file follows the lane's one rule for every secret file (``edge.secret_files``: regular,
mode 0600/0400, owned by the reading user or root).

Central holds database passwords and the signing key of a whole site, so unlike the lane
config a literal in the TOML is refused: the file would end up in backups and tickets.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from edge.secret_files import secret_file_problem


class SecretError(Exception):
    """A secret could not be read (unset variable, missing, empty or too-open file)."""


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
        problem = secret_file_problem(path)
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
