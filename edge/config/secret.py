"""``Secret``: a config value (password, HMAC key) that is resolved late and never printed.

A secret is written in TOML as a literal string, ``{env = "NAME"}`` or ``{file = "PATH"}``.
Only the *reference* is stored at load time; ``get()`` reads the environment or the file when
the value is actually needed, so a key rotated on disk is picked up on the next reconnect and
the value never sits in a config dump. ``repr``/``str``/serialisation all give ``***``.

A ``{file = ...}`` secret must be readable by its owner only (mode 0600 or 0400) and owned by
the user reading it (or root): anything group- or world-readable, or owned by another account,
is refused, because the lane box is shared with technicians. ``read_secret_file`` applies the
same rule to every other secret file (TLS private keys, central's keys).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationInfo
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from edge.secret_files import secret_file_problem

REDACTED = "***"

SecretKind = Literal["literal", "env", "file"]


class SecretError(Exception):
    """A secret could not be resolved (unset variable, missing, too-open or foreign file)."""


def read_secret_file(path: str | Path, *, key: str = "") -> bytes:
    """The bytes of a secret file after ``secret_file_problem``; SecretError otherwise.

    ``key`` names where the path came from (``sync.key_file``, ``--signing-key``) and leads
    the error message, so the operator knows which setting to fix.
    """
    path = Path(path)
    lead = f"{key}: " if key else ""
    problem = secret_file_problem(path)
    if problem:
        raise SecretError(lead + problem)
    try:
        # O_NOFOLLOW is not used: /etc/parkedge/... may legitimately be a symlink; the
        # checks above are on the target (stat follows links), which is what is read.
        return path.read_bytes()
    except OSError as exc:
        raise SecretError(f"{lead}secret file {path} cannot be read: {exc.strerror}") from None


class Secret:
    """A reference to a secret value; ``get()`` resolves it, nothing else reveals it."""

    __slots__ = ("_kind", "_ref")

    def __init__(self, value: str, kind: SecretKind = "literal") -> None:
        # _ref is the literal value, the variable name or the file path, by kind.
        self._kind: SecretKind = kind
        self._ref = value

    @classmethod
    def from_env(cls, name: str) -> Secret:
        return cls(name, "env")

    @classmethod
    def from_file(cls, path: str | Path) -> Secret:
        return cls(str(path), "file")

    @property
    def kind(self) -> SecretKind:
        return self._kind

    @property
    def source(self) -> str:
        """Where the value comes from, safe to print (never the value itself)."""
        if self._kind == "env":
            return f"env {self._ref}"
        if self._kind == "file":
            return f"file {self._ref}"
        return "inline value"

    def get(self) -> str:
        """The secret value; raises SecretError with a clear reason when it cannot be read."""
        if self._kind == "literal":
            return self._ref
        if self._kind == "env":
            value = os.environ.get(self._ref)
            if value is None:
                raise SecretError(f"environment variable {self._ref} is not set")
            return value
        path = Path(self._ref)
        try:
            text = read_secret_file(path).decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise SecretError(f"secret file {path} is not UTF-8 text: {exc}") from None
        if not text:
            raise SecretError(f"secret file {path} is empty")
        return text

    def problem(self) -> str | None:
        """Why ``get()`` would fail right now, or None (used by check-config)."""
        try:
            self.get()
        except SecretError as exc:
            return str(exc)
        return None

    def redacted(self) -> str | dict[str, str]:
        """The form written by dumps: the reference for env/file, ``***`` for literals."""
        if self._kind == "literal":
            return REDACTED
        return {self._kind: self._ref}

    def __repr__(self) -> str:
        return f"Secret('{REDACTED}')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return (self._kind, self._ref) == (other._kind, other._ref)

    def __hash__(self) -> int:
        return hash((Secret, self._kind, self._ref))

    def __reduce__(self) -> Any:
        raise TypeError("a Secret is not picklable (it would leak)")

    # Immutable: copies (e.g. Config.model_copy(deep=True)) can share the instance.
    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self

    # --- pydantic integration -------------------------------------------------------------

    @classmethod
    def _validate(cls, value: Any, info: ValidationInfo) -> Secret:
        if isinstance(value, Secret):
            return value
        if isinstance(value, str):
            return cls(value, "literal")
        if isinstance(value, dict):
            keys = set(value)
            if keys == {"env"} and isinstance(value["env"], str) and value["env"]:
                return cls.from_env(value["env"])
            if keys == {"file"} and isinstance(value["file"], str) and value["file"]:
                path = Path(value["file"]).expanduser()
                base = (info.context or {}).get("base_dir") if info.context else None
                if not path.is_absolute() and base is not None:
                    path = Path(base) / path
                # A file that exists but is group/world-readable is refused at load time;
                # a missing file is only an error where the secret is needed (see models).
                if path.exists():
                    problem = secret_file_problem(path)
                    if problem:
                        raise ValueError(problem)
                return cls.from_file(path)
        raise ValueError(
            'a secret must be a string, {env = "VARIABLE"} or {file = "/path"} '
            "(exactly one key, non-empty)"
        )

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda s: s.redacted(), when_used="always"
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "anyOf": [
                {"type": "string"},
                {"type": "object", "properties": {"env": {"type": "string"}}},
                {"type": "object", "properties": {"file": {"type": "string"}}},
            ]
        }
