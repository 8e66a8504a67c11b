"""``ConfigError``: every problem in a config file, each with the key path a technician edits."""

from __future__ import annotations


class ConfigError(Exception):
    """A config was rejected; ``errors`` lists (key path, reason), e.g.
    ``("devices.barrier.pulse_ms", "must be between 100 and 2000")``."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors: list[tuple[str, str]] = list(errors)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(f"{path}: {reason}" if path else reason for path, reason in self.errors)


class CrossFieldErrors(ValueError):
    """Raised inside model validators to report several errors with their own sub-paths.

    Pydantic only knows the location of the model that failed; the loader expands these
    into ``<model path>.<sub path>`` so the technician gets the exact key.
    """

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(f"{p}: {r}" for p, r in self.errors))
