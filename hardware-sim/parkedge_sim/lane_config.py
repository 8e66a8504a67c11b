"""A ``parkedge run`` config for a daemon attached to one simulated lane, and a seeded store.

Why here: the demo, the bench page, scenario runs and the daemon tests all start real lane
daemons against ``LaneSim``s; one writer keeps their configs alike and valid as the config
models change (``edge.config`` rejects unknown keys, so a stale copy fails loudly anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parents[2]
MALL_RULES = REPO / "config" / "rules.mall.example.toml"
TZ = ZoneInfo("Asia/Shanghai")


@dataclass(frozen=True)
class SyncSettings:
    """The ``[sync]`` section: broker port, the lane's HMAC key file, central's public key."""

    broker_port: int
    hmac_key_file: Path
    rules_public_key: str = ""
    keepalive_s: int = 10


def write_lane_config(
    tmp: Path,
    lane_id: str,
    direction: str,
    sim: dict[str, Any],
    *,
    listen: str | None = None,
    storage: Path | None = None,
    rules: Path = MALL_RULES,
    sync: SyncSettings | None = None,
    site: str = "demo-mall",
    min_confidence: float = 0.8,
    log_level: str = "WARNING",
    camera_address: str = "127.0.0.1",
    camera_auth: tuple[str, str, Path] | None = None,
) -> Path:
    """Write ``tmp/<lane_id>.toml`` for the lane ``sim`` (``LaneSim.info()``) and return it.

    Plates come from the smart-camera push listener at ``listen`` (the sim's camera posts
    there) or, without ``listen``, from the sim's MJPEG stream read on the box, with the lane's
    default ``min_confidence`` (0.8; below it a read is uncertain and never spends points).
    Only ``camera_address`` (the sim's camera posts from 127.0.0.1) may push; ``camera_auth``
    = (scheme, username, password file) makes the listener demand the camera's credentials.
    """
    if listen is None and not sim.get("video_url"):
        raise ValueError(f"lane {lane_id}: no push listener and the sim has no video camera")
    idle = '["欢迎光临", "Welcome"]' if direction == "entry" else '["一路顺风", "Goodbye"]'
    if listen is not None:
        camera = (f'[camera]\nsource = "push"\nlisten = "{listen}"\n'
                  f'address = "{camera_address}"\n')
        if camera_auth is not None:
            scheme, user, password_file = camera_auth
            camera += (f'auth = "{scheme}"\nusername = "{user}"\n'
                       f'password = {{ file = "{password_file}" }}\n')
    else:
        camera = (f'[camera]\nsource = "stream"\nurl = "{sim["video_url"]}"\n'
                  f"min_confidence = {min_confidence}\n\n"
                  f'[lpr]\ngrammar = "cn"\nvote_frames = 3\nkeep_crops_days = 1\n'
                  f'crops_dir = "{tmp / f"{lane_id}-crops"}"\n')
    if sim.get("barrier_path"):  # an EB RS-485 barrier controller reporting its own loops
        barrier = (f'[buses.io]\nurl = "{sim["barrier_path"]}"\nprotocol = "raw"\n'
                   "timeout_s = 0.5\nretries = 2\ngap_ms = 2\n\n"
                   '[devices.barrier]\ndriver = "eb-serial"\nbus = "io"\nunit = 1\n\n'
                   '[devices.loops]\ndriver = "barrier-status"\nbus = "io"\n'
                   "poll_ms = 20\ndebounce_ms = 10\n\n")
    else:  # a Modbus relay module pulsing the barrier's inputs, loops as discrete inputs
        barrier = (f'[buses.io]\nurl = "{sim["modbus_url"]}"\nprotocol = "modbus"\n'
                   "timeout_s = 0.5\nretries = 2\ngap_ms = 2\n\n"
                   '[devices.barrier]\ndriver = "modbus-coil"\nbus = "io"\npulse_ms = 150\n\n'
                   '[devices.loops]\ndriver = "modbus-inputs"\nbus = "io"\n'
                   # the simulated module counts its loop inputs (FC04 n = DI n's rises)
                   "poll_ms = 20\ndebounce_ms = 10\ncounter_closing = 5\n\n")
    sync_text = ""
    if sync is not None:
        sync_text = (f'[sync]\nenabled = true\nbroker_url = "mqtt://127.0.0.1:{sync.broker_port}"\n'
                     f'hmac_key = {{ file = "{sync.hmac_key_file}" }}\n'
                     f"keepalive_s = {sync.keepalive_s}\n"
                     f'rules_public_key = "{sync.rules_public_key}"\n')
    text = f"""# generated for a simulated lane (parkedge_sim.lane_config)
[lane]
id = "{lane_id}"
site = "{site}"
direction = "{direction}"
timezone = "Asia/Shanghai"
clock = "event"
plate_timeout_s = 6.0
clear_timeout_s = 20.0
payment_timeout_s = 60.0
arm_confirm_s = 3.0
unknown_plate = "hold"
idle_lines = {idle}
control_socket = "{tmp / f"{lane_id}.sock"}"

{barrier}[buses.led]
url = "{sim["display_path"]}"
protocol = "raw"
gap_ms = 2

[devices.display]
driver = "a0"
bus = "led"

{camera}
[rules]
path = "{rules}"

{sync_text}
[storage]
path = "{storage or tmp / f"{lane_id}.db"}"

[logging]
level = "{log_level}"
format = "json"
"""
    path = tmp / f"{lane_id}.toml"
    path.write_text(text, encoding="utf-8")
    return path


@dataclass(frozen=True)
class SeedMember:
    member_id: str
    plate: str
    tier: str
    points: int
    coupons_3h: int = 0
    auto_deduct: bool = True


BENCH_MEMBERS = (
    SeedMember("M-1001", "沪A12345", "gold", 400, coupons_3h=2),
    SeedMember("M-1002", "苏E9B7K2", "silver", 3),
    SeedMember("M-1003", "皖A9H379", "normal", 800),
    SeedMember("M-1004", "粤AD12345", "silver", 120),
    SeedMember("M-1005", "鲁Q08F99", "normal", 300, auto_deduct=False),
    SeedMember("M-1006", "闽D5K233", "normal", 60),
)


def seed_members(db: Path, today: datetime,
                 members: tuple[SeedMember, ...] = BENCH_MEMBERS) -> None:
    """A lane's member cache written directly, for a bench without central (no sync)."""
    from edge.store import Store

    with Store.open(db, "SEED") as store:
        for mem in members:
            store.upsert_member(mem.member_id, tier=mem.tier, auto_deduct=mem.auto_deduct)
            expires = datetime(2027, 3, 31, 23, 59, 59, tzinfo=TZ)
            store.set_lots(mem.member_id, [(f"{mem.member_id}-2026", mem.points, expires,
                                            today - timedelta(days=30))])
            for i in range(mem.coupons_3h):
                store.add_coupon(mem.member_id, f"{mem.member_id}-GOLD-2611-{i + 1}", "hours",
                                 Decimal(3), datetime(2026, 11, 30, 23, 59, 59, tzinfo=TZ))
            store.bind_plate(mem.plate, mem.member_id)
