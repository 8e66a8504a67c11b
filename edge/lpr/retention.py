"""Privacy: plate crops (and optional full frames) are kept only for the configured days.

Called by a scheduled job; ``now`` is an argument so the job (and its tests) own the clock.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timedelta
from pathlib import Path

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})


def purge_old_crops(crops_dir: Path, keep_days: int, now: datetime) -> int:
    """Delete images under ``crops_dir`` last modified before ``now - keep_days``; return how
    many. Empty day folders left behind are removed. A missing folder purges nothing."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if keep_days < 0:
        raise ValueError(f"keep_days must be >= 0, got {keep_days}")
    if not crops_dir.is_dir():
        return 0
    cutoff = (now - timedelta(days=keep_days)).timestamp()
    removed = 0
    for path in sorted(crops_dir.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue  # removed concurrently
        except OSError as exc:
            log.warning("cannot purge %s: %s", path, exc)
    for folder in sorted((p for p in crops_dir.rglob("*") if p.is_dir()), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only succeeds when empty
    return removed
