"""Logging set-up: JSON lines on stdout (journald keeps them), and no secret ever printed.

Every record goes through ``RedactingFilter`` before formatting: ``Secret`` objects, values
of secret-named ``extra`` keys (password, hmac_key, token...) and any value registered with
``add_sensitive`` (e.g. a resolved MQTT password) are replaced by ``***``.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import IO, Any

from edge.config.models import LoggingConfig
from edge.config.redact import is_secret_key
from edge.config.secret import REDACTED, Secret

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}

_sensitive: set[str] = set()
_sensitive_lock = threading.Lock()


def add_sensitive(value: str) -> None:
    """Register a resolved secret value so it is scrubbed from any later log line."""
    if len(value) >= 4:  # shorter values would scrub ordinary words
        with _sensitive_lock:
            _sensitive.add(value)


def _scrub_text(text: str) -> str:
    with _sensitive_lock:
        values = sorted(_sensitive, key=len, reverse=True)
    for value in values:
        text = text.replace(value, REDACTED)
    return text


def _clean(key: str, value: Any) -> Any:
    if isinstance(value, Secret):
        return REDACTED
    if is_secret_key(key) and value not in (None, ""):
        if isinstance(value, Mapping) and value and set(value) <= {"env", "file"}:
            return dict(value)  # a reference to a secret is not the secret
        return REDACTED
    if isinstance(value, Mapping):
        return {str(k): _clean(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(key, v) for v in value]
    if isinstance(value, str):
        return _scrub_text(value)
    return value


class RedactingFilter(logging.Filter):
    """Rewrites records in place so no handler can see a secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            try:
                if isinstance(record.args, Mapping):
                    record.msg = str(record.msg) % {
                        k: REDACTED if isinstance(v, Secret) else v for k, v in record.args.items()
                    }
                else:
                    args = record.args if isinstance(record.args, tuple) else (record.args,)
                    record.msg = str(record.msg) % tuple(
                        REDACTED if isinstance(a, Secret) else a for a in args
                    )
            except (TypeError, ValueError, KeyError):
                record.msg = f"{record.msg} {record.args!r}"
            record.args = None
        record.msg = _scrub_text(str(record.msg))
        for key in list(vars(record)):
            if key not in _STANDARD:
                setattr(record, key, _clean(key, getattr(record, key)))
        return True


def _json_default(value: Any) -> Any:
    if isinstance(value, Secret):
        return REDACTED
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path | bytes):
        return str(value)
    return repr(value)


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ms), level, logger, msg, extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exc"] = _scrub_text(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False, default=_json_default)


class TextFormatter(logging.Formatter):
    """Human-readable line for a terminal: time level logger: msg key=value ..."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = " ".join(
            f"{k}={_json_default(v) if not isinstance(v, str | int) else v}"
            for k, v in extra_fields(record).items()
        )
        return _scrub_text(f"{line} {extras}" if extras else line)


_HANDLER_MARK = "_parkedge_handler"


def setup_logging(cfg: LoggingConfig, stream: IO[str] | None = None) -> logging.Handler:
    """Configure the root logger from ``[logging]``; idempotent (replaces our own handler)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    setattr(handler, _HANDLER_MARK, True)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if cfg.format == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(cfg.level)
    logging.captureWarnings(True)
    return handler


class LogLimiter:
    """Logs the first event of each key, then at most one line per key and ``interval_s``.

    Why: a flood of bad input (thousands of refused camera connections, a burst of malformed
    posts) once wrote 29 MB of ERROR lines in 90 s. The first line for a source says what
    happened; later ones are counted and folded into the next line ("... 812 more since").
    Keys are bounded (``max_keys``; the oldest is forgotten) so a caller may key by a peer
    address without the limiter growing with the flood.
    """

    def __init__(
        self, logger: logging.Logger, interval_s: float = 60.0, max_keys: int = 256,
        burst: int = 20, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.max_keys = max_keys
        self.burst = burst  # lines per interval over all keys (a flood from many addresses)
        self._clock = clock
        self._keys: dict[str, tuple[float, int]] = {}  # key -> (last logged at, suppressed)
        self._lines: deque[float] = deque()  # when the last ``burst`` lines were logged
        self._lock = threading.Lock()

    def log(self, key: str, level: int, msg: str, *args: Any) -> bool:
        """Log ``msg % args`` unless ``key`` was logged within ``interval_s`` (or the limiter
        logged ``burst`` lines in that time); True if logged."""
        now = self._clock()
        with self._lock:
            last = self._keys.get(key)
            while self._lines and now - self._lines[0] >= self.interval_s:
                self._lines.popleft()
            recent = last is not None and now - last[0] < self.interval_s
            if recent or len(self._lines) >= self.burst:
                self._keys[key] = (last[0] if last else now, (last[1] if last else 0) + 1)
                self._trim()
                return False
            suppressed = last[1] if last is not None else 0
            self._keys.pop(key, None)
            self._keys[key] = (now, 0)  # re-inserted: the dict's order is oldest first
            self._lines.append(now)
            self._trim()
        if suppressed:
            msg = f"{msg} ({suppressed} more like this since the last line)"
        self.logger.log(level, msg, *args)
        return True

    def _trim(self) -> None:
        while len(self._keys) > self.max_keys:
            del self._keys[next(iter(self._keys))]

    def suppressed(self, key: str) -> int:
        """Events of ``key`` not logged since its last line (tests, status)."""
        with self._lock:
            entry = self._keys.get(key)
        return entry[1] if entry else 0
