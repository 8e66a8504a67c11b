"""Plate sources built from the config (edge/lpr/sources.py): trust settings reach the
listener, typed plates are checked, and the drivers' factory no longer knows about LPR."""

from __future__ import annotations

import ast
import asyncio
import logging
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from edge import metrics
from edge.config import SecretError
from edge.config.loader import parse_config
from edge.fields import FieldError
from edge.logs import LogLimiter
from edge.lpr.camera_push import CameraPushSource
from edge.lpr.manual import ManualPlateSource, MergedPlateSource
from edge.lpr.source import PlateRead
from edge.lpr.sources import build_plate_source

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "entry.example.toml"
TZ = ZoneInfo("Asia/Shanghai")
AT = datetime(2026, 11, 23, 20, 15, tzinfo=TZ)


def config(tmp: Path, **camera: Any) -> Any:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    data["camera"].update(listen="127.0.0.1:18081", **camera)
    data["lane"]["control_socket"] = str(tmp / "c.sock")
    return parse_config(data, base_dir=EXAMPLE.parent)


def password_file(tmp: Path, mode: int = 0o600) -> Path:
    path = tmp / "camera.pass"
    path.write_text("s3cret-cam\n")
    path.chmod(mode)
    return path


def test_push_source_takes_the_cameras_address_and_credentials(tmp_path: Path) -> None:
    cfg = config(tmp_path, password={"file": str(password_file(tmp_path))})
    source = build_plate_source(cfg, TZ)
    assert isinstance(source, CameraPushSource)
    assert (source.listen_host, source.port, source.lane_id) == ("127.0.0.1", 18081, "E1")
    assert source.min_confidence == pytest.approx(0.8)
    assert source.allow.allows("192.168.10.64") and not source.allow.allows("192.168.10.2")
    assert source.auth.scheme == "digest" and source.auth.required
    assert source.max_body_bytes == 2 * 1024 * 1024 and source.max_connections == 16


def test_allow_from_overrides_the_address_and_an_empty_list_refuses_all(tmp_path: Path) -> None:
    pw = {"file": str(password_file(tmp_path))}
    wide = build_plate_source(config(tmp_path, password=pw, allow_from=["10.0.0.0/29"]), TZ)
    assert isinstance(wide, CameraPushSource)
    assert wide.allow.allows("10.0.0.7") and not wide.allow.allows("192.168.10.64")
    nobody = build_plate_source(config(tmp_path, password=pw, allow_from=[]), TZ)
    assert isinstance(nobody, CameraPushSource) and not nobody.allow.networks
    unset = build_plate_source(config(tmp_path, auth="none", address=""), TZ)
    assert isinstance(unset, CameraPushSource) and not unset.allow.networks


def test_camera_config_refuses_names_and_auth_without_password(tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"camera\.address"):
        config(tmp_path, address="camera.local")
    with pytest.raises(Exception, match=r"camera\.allow_from"):
        config(tmp_path, allow_from=["camera.local"])
    with pytest.raises(Exception, match=r"camera\.password: required"):
        config(tmp_path, password=None)
    with pytest.raises(Exception, match="0644"):
        config(tmp_path, password={"file": str(password_file(tmp_path, 0o644))})


def test_a_missing_password_file_stops_the_start_naming_the_key(tmp_path: Path) -> None:
    cfg = config(tmp_path, password={"file": str(tmp_path / "absent.pass")})
    with pytest.raises(SecretError, match=r"camera\.password: secret file .* does not exist"):
        build_plate_source(cfg, TZ)


def test_the_drivers_factory_does_not_import_lpr() -> None:
    tree = ast.parse((ROOT / "edge" / "barrier" / "factory.py").read_text(encoding="utf-8"))
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert imported and not [m for m in imported if m and m.startswith("edge.lpr")]


# -- typed plates (parkedge lane plate → control socket → ManualPlateSource) -----------------
@pytest.mark.parametrize(
    "plate",
    ["沪A" + "1" * 298, "沪A1\x012345", "沪A1\n2345", "沪A1\t2345", "", "沪A-" + "·" * 3 + "!"],
)
def test_a_typed_plate_that_is_not_a_plate_is_refused_and_counted(plate: str) -> None:
    async def main() -> None:
        manual = ManualPlateSource("E1")
        before = metrics.REGISTRY.get_sample_value(
            "parkedge_bad_input_total", {"source": "manual"}) or 0.0
        with pytest.raises(FieldError, match="plate"):
            manual.submit(plate, AT, "tech")
        after = metrics.REGISTRY.get_sample_value(
            "parkedge_bad_input_total", {"source": "manual"})
        assert after == before + 1
        assert manual._queue.empty()
        assert manual.submit(" 沪a·12345 ", AT, "tech").plate == "沪A12345"

    asyncio.run(main())


class _Feed:
    """A plate source that publishes whatever it is given (a source that forgot to check)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[PlateRead] = asyncio.Queue()
        self.health = "ok"

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def trigger(self) -> None: ...

    async def get(self) -> PlateRead:
        return await self.queue.get()


def test_merged_source_drops_a_read_no_source_checked() -> None:
    async def main() -> None:
        feed = _Feed()
        merged = MergedPlateSource(feed)  # type: ignore[arg-type]
        await merged.start()
        try:
            for plate in ("X" * 300, "沪A12345"):
                feed.queue.put_nowait(PlateRead(plate, 0.9, AT, "test", plate[:8]))
            assert (await asyncio.wait_for(merged.get(), 1.0)).plate == "沪A12345"
            assert merged._queue.empty()
        finally:
            await merged.stop()

    asyncio.run(main())


def test_log_limiter_logs_once_per_key_and_folds_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    logger = logging.getLogger("test.limiter")
    limiter = LogLimiter(logger, interval_s=60, max_keys=3, burst=5, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="test.limiter")
    for _ in range(1000):
        limiter.log("a", logging.WARNING, "refused from %s", "a")
    assert len(caplog.records) == 1 and limiter.suppressed("a") == 999
    now[0] = 61
    assert limiter.log("a", logging.WARNING, "refused from %s", "a")
    assert "999 more" in caplog.records[-1].getMessage()
    for i in range(100):  # many sources: at most ``burst`` lines an interval, keys bounded
        limiter.log(f"k{i}", logging.WARNING, "x")
    assert len(caplog.records) == 6 and len(limiter._keys) == 3


def test_stream_source_takes_the_early_accept_settings(tmp_path: Path) -> None:
    from edge.lpr.onbox_source import OnBoxPlateSource

    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    data["camera"].update(source="stream", url="http://127.0.0.1:9/x.mjpg")
    data["lane"]["control_socket"] = str(tmp_path / "c.sock")
    data["lpr"].update(vote_frames=4, early_frames=1, early_confidence=0.97)
    source = build_plate_source(parse_config(data, base_dir=EXAMPLE.parent), TZ)
    assert isinstance(source, OnBoxPlateSource)
    assert (source.vote_frames, source.early_frames, source.early_confidence) == (4, 1, 0.97)
