"""Crop retention on a real folder with real modification times."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edge.lpr.retention import purge_old_crops

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=ZoneInfo("Asia/Shanghai"))


def touch(path: Path, age_days: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8jpeg")
    t = (NOW - timedelta(days=age_days)).timestamp()
    os.utime(path, (t, t))
    return path


def test_purges_only_old_images_and_empty_folders(tmp_path: Path) -> None:
    old = touch(tmp_path / "2026-11-01" / "a.crop.jpg", 22)
    old_frame = touch(tmp_path / "2026-11-01" / "a.frame.jpg", 22)
    young = touch(tmp_path / "2026-11-20" / "b.crop.jpg", 3)
    other = touch(tmp_path / "2026-11-01" / "notes.txt", 40)  # not an image: left alone
    assert purge_old_crops(tmp_path, 7, NOW) == 2
    assert not old.exists() and not old_frame.exists()
    assert young.exists() and other.exists()
    touch(tmp_path / "2026-10-01" / "c.png", 50)
    assert purge_old_crops(tmp_path, 7, NOW) == 1
    assert not (tmp_path / "2026-10-01").exists()  # emptied folder removed


def test_keep_zero_days_purges_everything_older_than_now(tmp_path: Path) -> None:
    touch(tmp_path / "x.jpg", 0.01)
    assert purge_old_crops(tmp_path, 0, NOW) == 1


def test_missing_folder_and_bad_args(tmp_path: Path) -> None:
    assert purge_old_crops(tmp_path / "nope", 7, NOW) == 0
    with pytest.raises(ValueError, match="timezone-aware"):
        purge_old_crops(tmp_path, 7, datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="keep_days"):
        purge_old_crops(tmp_path, -1, NOW)
