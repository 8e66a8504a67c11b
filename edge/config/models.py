"""Typed model of one lane controller's TOML config (one model per section).

Every model forbids unknown keys (a typo must fail loudly, not silently fall back to a
default) and is frozen (the daemon reads its config once; nobody mutates it at run time).
Checks that involve several fields raise ``CrossFieldErrors`` with sub-paths, so every
error reaches the technician as ``key.path: reason``. Load with ``edge.config.load_config``.

Which keys matter for which lane direction is documented in ``docs/config.md``; exit-only
keys (``lane.payment_timeout_s``, ``lane.unknown_plate``, ``lane.uncertain_read``) are
accepted on an entry lane and simply unused there.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edge.config.addresses import BusEndpoint, parse_bus_url, parse_host_port
from edge.config.errors import CrossFieldErrors
from edge.config.secret import Secret, secret_file_problem

# --- shared field types ---------------------------------------------------------------------


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Relative paths are relative to the config file's directory, not the daemon's cwd."""
    value = value.expanduser()
    base = (info.context or {}).get("base_dir") if info.context else None
    if not value.is_absolute() and base is not None:
        return Path(base) / value
    return value


def _empty_is_none(value: Any) -> Any:
    # TOML has no null: an empty string means "not set" for optional paths.
    return None if value == "" else value


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
OptionalPath = Annotated[ConfigPath | None, BeforeValidator(_empty_is_none)]


def _check_listen(value: str) -> str:
    if value:
        parse_host_port(value)
    return value


ListenAddress = Annotated[str, AfterValidator(_check_listen)]


class Section(BaseModel):
    """Base of every section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --- [lane] ---------------------------------------------------------------------------------


class LaneConfig(Section):
    """Identity, clock and the timeouts/policies of the lane state machine."""

    id: str = Field(
        pattern=r"^[A-Za-z0-9_-]{1,32}$",
        description="Lane id, unique in the site; prefixes every ledger entry id.",
    )
    site: str = Field(
        default="site-01",
        min_length=1,
        max_length=64,
        description="Car park / mall identifier shared by its lanes.",
    )
    direction: Literal["entry", "exit"] = Field(
        description="Whether this controller opens sessions (entry) or closes them (exit)."
    )
    timezone: str = Field(
        default="Asia/Shanghai",
        description="IANA zoneinfo key; tariffs and day boundaries are in this local time.",
    )
    clock: Literal["system", "event"] = Field(
        default="system",
        description='"event" (bench/demo only) takes passage times from the plate event.',
    )
    plate_timeout_s: float = Field(
        default=10.0, gt=0, le=600, description="Vehicle on the arming loop, no plate read."
    )
    clear_timeout_s: float = Field(
        default=60.0, gt=0, le=3600, description="Barrier up, vehicle has not passed."
    )
    payment_timeout_s: float = Field(
        default=300.0, gt=0, le=7200, description="Exit only: wait for payment or operator."
    )
    arm_confirm_s: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description='Arm must report "up" within this after an open pulse, else barrier fault.',
    )
    unknown_plate: Literal["hold", "flat_fee"] = Field(
        default="hold",
        description="Exit only: plate without an entry record is held for the operator "
        "or charged the rule bundle's flat fee.",
    )
    uncertain_read: Literal["no_points", "hold"] = Field(
        default="no_points",
        description="Exit only: low-confidence read computes the fee but deducts nothing "
        "(no_points) or holds for the operator.",
    )
    idle_lines: list[str] = Field(
        default_factory=lambda: ["欢迎光临", "Welcome"],
        max_length=8,
        description="Lines shown on the LED display while the lane is idle.",
    )
    control_socket: ConfigPath = Field(
        default=Path("/run/parkedge/control.sock"),
        description="Unix socket for operator commands (lane open) from the CLI.",
    )

    @field_validator("timezone")
    @classmethod
    def _zone_exists(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            msg = f"'{value}' is not a known zoneinfo key (e.g. Asia/Shanghai)"
            raise ValueError(msg) from None
        return value

    @field_validator("control_socket")
    @classmethod
    def _socket_path_fits(cls, value: Path) -> Path:
        # sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
        if len(os.fsencode(value)) > 107:
            raise ValueError(f"a Unix socket path is at most 107 bytes: {value}")
        return value

    @property
    def tz(self) -> ZoneInfo:
        """The lane's time zone as a ZoneInfo (validated at load)."""
        return ZoneInfo(self.timezone)


# --- [buses.NAME] ---------------------------------------------------------------------------


class BusConfig(Section):
    """One RS-485 port or Modbus connection; exactly one owner serialises its requests."""

    url: str = Field(
        description='"tcp://host:port" (Modbus TCP), "socket://host:port" (RTU framing over '
        'TCP), "/dev/ttyUSB0", "serial:///dev/ttyUSB0" or a pty path.'
    )
    protocol: Literal["modbus", "raw"] = Field(
        default="modbus",
        description='"modbus", or "raw" for codec-framed serial (displays, proprietary barriers).',
    )
    baudrate: int = Field(default=9600, gt=0, le=4_000_000, description="Serial baud rate.")
    bytesize: Literal[5, 6, 7, 8] = Field(default=8, description="Serial data bits.")
    parity: Literal["N", "E", "O", "M", "S"] = Field(default="N", description="Serial parity.")
    stopbits: Literal[1, 2] = Field(default=1, description="Serial stop bits (1 or 2).")
    timeout_s: float = Field(default=0.5, gt=0, le=30, description="Per-request reply timeout.")
    retries: int = Field(default=2, ge=0, le=10, description="Retries before a device error.")
    gap_ms: int = Field(
        default=30, ge=0, le=1000, description="Quiet time between requests on this bus."
    )
    reconnect_max_s: float = Field(
        default=10.0, gt=0, le=600, description="Upper bound of the reconnect back-off."
    )

    @field_validator("url")
    @classmethod
    def _url_parses(cls, value: str) -> str:
        parse_bus_url(value)
        return value

    @model_validator(mode="after")
    def _tcp_is_modbus(self) -> BusConfig:
        if self.endpoint.kind == "tcp" and self.protocol != "modbus":
            raise CrossFieldErrors(
                [("protocol", 'a tcp:// bus is Modbus TCP; use socket://host:port for "raw"')]
            )
        return self

    @property
    def endpoint(self) -> BusEndpoint:
        return parse_bus_url(self.url)


# --- [devices.*] ----------------------------------------------------------------------------

BarrierDriver = Literal["modbus-coil", "modbus-register", "eb-serial"]
MODBUS_DRIVERS = frozenset({"modbus-coil", "modbus-register", "modbus-inputs"})
RAW_DRIVERS = frozenset({"eb-serial", "a0", "a5"})


class BarrierConfig(Section):
    """How the barrier is pulsed open/closed and where its limit switches are read."""

    driver: BarrierDriver = Field(
        default="modbus-coil",
        description='"modbus-coil" (FC05), "modbus-register" (FC06 relay boards) or '
        '"eb-serial" (EB addr cmd data XOR).',
    )
    bus: str = Field(description="Name of the [buses.*] entry the barrier is on.")
    unit: int = Field(
        default=1, ge=0, le=255, description="Modbus device id (1..247) or RS-485 address."
    )
    open_channel: int = Field(default=1, ge=0, le=255, description="Relay wired to OPEN.")
    close_channel: int = Field(default=2, ge=0, le=255, description="Relay wired to CLOSE.")
    pulse_ms: int = Field(
        default=400, ge=100, le=2000, description="Relay on-time; relays are pulsed, never latched."
    )
    input_arm_up: int = Field(default=1, ge=0, le=65535, description="FC02 input: arm-up limit.")
    input_arm_down: int = Field(
        default=2, ge=0, le=65535, description="FC02 input: arm-down limit."
    )
    input_fault: int = Field(default=3, ge=0, le=65535, description="FC02 input: barrier fault.")

    @model_validator(mode="after")
    def _distinct(self) -> BarrierConfig:
        errors: list[tuple[str, str]] = []
        if self.open_channel == self.close_channel:
            errors.append(("close_channel", "must differ from open_channel"))
        errors += _duplicate_inputs(
            {
                "input_arm_up": self.input_arm_up,
                "input_arm_down": self.input_arm_down,
                "input_fault": self.input_fault,
            }
        )
        if errors:
            raise CrossFieldErrors(errors)
        return self


class LoopsConfig(Section):
    """Where the arming loop, closing loop and photocell are read, and how."""

    driver: Literal["modbus-inputs", "barrier-status"] = Field(
        default="modbus-inputs",
        description='"modbus-inputs" (FC02 on a relay/IO module) or "barrier-status" '
        "(the barrier controller reports its loops).",
    )
    bus: str = Field(
        default="",
        description='[buses.*] entry of the IO module (required for "modbus-inputs").',
    )
    unit: int = Field(default=1, ge=0, le=255, description="Modbus device id of the IO module.")
    input_arming: int = Field(default=4, ge=0, le=65535, description="Input: arming loop.")
    input_closing: int = Field(default=5, ge=0, le=65535, description="Input: closing loop.")
    input_photocell: int = Field(default=6, ge=0, le=65535, description="Input: photocell.")
    mode: Literal["presence", "pulse"] = Field(
        default="presence", description="Loop detector relay mode."
    )
    debounce_ms: int = Field(default=30, ge=0, le=1000, description="Re-read delay to debounce.")
    poll_ms: int = Field(default=50, ge=10, le=5000, description="Input polling period.")
    counter_closing: int | None = Field(
        default=None, ge=0, le=65535,
        description="Input register (FC04) holding the IO module's 16-bit count of the closing "
        "loop input's rising edges (its DI counter mode), if it has one: a car's pulse a late "
        "poll missed is still seen there. Presence mode only.",
    )

    @model_validator(mode="after")
    def _distinct(self) -> LoopsConfig:
        errors = _duplicate_inputs(
            {
                "input_arming": self.input_arming,
                "input_closing": self.input_closing,
                "input_photocell": self.input_photocell,
            }
        )
        if self.driver == "modbus-inputs" and not self.bus:
            errors.append(("bus", 'required when driver = "modbus-inputs"'))
        if self.counter_closing is not None and (
                self.driver != "modbus-inputs" or self.mode != "presence"):
            errors.append(("counter_closing",
                           'only with driver = "modbus-inputs" and mode = "presence"'))
        if errors:
            raise CrossFieldErrors(errors)
        return self


class DisplayConfig(Section):
    """The lane's LED board (and voice) on a raw RS-485 bus."""

    driver: Literal["a0", "a5"] = Field(
        default="a0",
        description='"a0" (0xA0 id line cmd len16 data XOR) or "a5" (A5 header, CRC16).',
    )
    bus: str = Field(description='Name of the [buses.*] entry (protocol "raw").')
    address: int = Field(default=1, ge=0, le=255, description="Board id on the bus.")
    lines: int = Field(default=4, ge=1, le=8, description="Text lines on the board.")
    columns: int = Field(default=16, ge=4, le=64, description="Half-width columns per line.")
    voice: bool = Field(default=True, description="Speak messages through the board's TTS.")
    encoding: Literal["gb2312", "gbk", "utf-16-be"] = Field(
        default="gb2312", description="Text encoding the board expects."
    )


class DevicesConfig(Section):
    """The lane's devices; each names the bus it is on."""

    barrier: BarrierConfig = Field(description="Barrier gate relay/controller.")
    loops: LoopsConfig = Field(description="Loop detectors and photocell.")
    display: DisplayConfig = Field(description="LED display and voice.")


def _duplicate_inputs(inputs: dict[str, int]) -> list[tuple[str, str]]:
    seen: dict[int, str] = {}
    errors: list[tuple[str, str]] = []
    for name, address in inputs.items():
        if address in seen:
            errors.append((name, f"input {address} is already used by {seen[address]}"))
        else:
            seen[address] = name
    return errors


# --- [camera], [lpr], [rules] ---------------------------------------------------------------


class CameraConfig(Section):
    """Where plates come from: a smart camera's push, or a video stream read on the box."""

    source: Literal["push", "stream"] = Field(
        default="push",
        description='"push" (smart camera HTTP push) or "stream" (on-box LPR from a video URL).',
    )
    listen: ListenAddress = Field(
        default="127.0.0.1:8081",
        description="host:port of the push listener: the box's address on the camera's "
        "network (never 0.0.0.0 on a site LAN).",
    )
    url: str = Field(
        default="",
        description="stream: rtsp://, http://...mjpg, /dev/video0, a file or a folder.",
    )
    min_confidence: float = Field(
        default=0.80, ge=0, le=1, description="Reads below this count as uncertain."
    )
    address: str = Field(
        default="",
        description="push: the camera's IP address; only it may push plates unless "
        "allow_from says otherwise. Empty and no allow_from = every push is refused.",
    )
    allow_from: list[str] | None = Field(
        default=None,
        max_length=64,
        description="push: IP addresses or networks (CIDR) allowed to push plates; "
        "unset = [address]; [] = nobody.",
    )
    auth: Literal["none", "basic", "digest"] = Field(
        default="none",
        description='push: HTTP authentication the camera must send ("digest" preferred: '
        '"basic" carries the password in clear on the camera network).',
    )
    username: str = Field(
        default="", max_length=64, description="push: user name the camera authenticates with."
    )
    password: Secret | None = Field(
        default=None,
        description='push: its password, {file = "/etc/parkedge/camera.pass"} (0600) or '
        '{env = "NAME"}; required with auth.',
    )
    max_connections: int = Field(
        default=16, ge=1, le=256,
        description="push: open connections at most; at the cap the oldest idle one is closed. "
        "At most 256: the unit's LimitNOFILE=1024 must leave descriptors below 1024 for the "
        "serial buses and MQTT, whose select() cannot wait on a higher one.",
    )
    max_body_bytes: int = Field(
        default=2 * 1024 * 1024, ge=64 * 1024, le=64 * 1024 * 1024,
        description="push: largest post (XML plus pictures) accepted; bodies are streamed.",
    )
    header_timeout_s: float = Field(
        default=10.0, gt=0, le=300,
        description="push: a request head (or the next one on a kept-alive connection) "
        "must arrive within this.",
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, le=600, description="push: a request body must arrive within this."
    )

    @field_validator("address")
    @classmethod
    def _address_is_ip(cls, value: str) -> str:
        if value:
            ipaddress.ip_address(value)  # ValueError names it; no DNS names in an allowlist
        return value

    @field_validator("allow_from")
    @classmethod
    def _networks(cls, value: list[str] | None) -> list[str] | None:
        for entry in value or []:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network (CIDR)") from None
        return value

    @model_validator(mode="after")
    def _stream_needs_url(self) -> CameraConfig:
        if self.source == "stream" and not self.url:
            raise CrossFieldErrors([("url", 'required when source = "stream"')])
        if self.source == "push" and not self.listen:
            raise CrossFieldErrors([("listen", 'required when source = "push"')])
        if self.auth != "none":
            errors = []
            if not self.username:
                errors.append(("username", f'required when auth = "{self.auth}"'))
            if self.password is None:
                errors.append(("password", f'required when auth = "{self.auth}"'))
            if errors:
                raise CrossFieldErrors(errors)
        return self


class LprConfig(Section):
    """Plate recognition and what evidence is kept."""

    grammar: str = Field(
        default="cn",
        description="Plate grammar: cn (mainland China), latin (any 2-8 alphanumerics), "
        "latin:LAYOUTS (L letter, D digit, A either, comma-separated), or a European site's "
        "countries: sk, cz, eu:sk,cz.",
    )
    vote_frames: int = Field(default=5, ge=1, le=50, description="Frames voted per vehicle.")
    early_frames: int = Field(
        default=2,
        ge=0,
        le=50,
        description=(
            "Frames that must read the same plate before a very sure read is accepted ahead "
            "of vote_frames (each frame costs the waiting car ~0.1 s), the plate CRNN reading "
            "every character the same; not 1: a sure one-frame misread with the CRNN agreeing "
            "was seen (bench/lpr_unsure.py). 0 = off, always vote_frames."
        ),
    )
    early_confidence: float = Field(
        default=0.9,
        ge=0,
        le=1,
        description=(
            "Vote confidence an early accept needs (never below camera.min_confidence): only "
            "a very sure read is accepted early, since no later frame can outvote a misread."
        ),
    )
    keep_crops_days: int = Field(
        default=7, ge=0, le=365, description="Days plate crops are kept (0 = not kept)."
    )
    keep_frames: bool = Field(default=False, description="Also keep full frames (privacy!).")
    crops_dir: ConfigPath = Field(
        default=Path("/var/lib/parkedge/crops"), description="Where plate crops are written."
    )

    @field_validator("grammar")
    @classmethod
    def _known_grammar(cls, v: str) -> str:
        """Build it once here, so a bad name or layout fails at load with its key path."""
        from edge.lpr.grammar import grammar_by_name  # pure, no I/O

        grammar_by_name(v)
        return v


class RulesConfig(Section):
    """Reference to the signed rule bundle (tariffs, points, campaigns)."""

    path: ConfigPath = Field(
        default=Path("/etc/parkedge/rules.toml"), description="The rule bundle file."
    )


# --- [sync] ---------------------------------------------------------------------------------


class SyncConfig(Section):
    """Uplink of the ledger to the central server over MQTT, and rule bundle downlink."""

    enabled: bool = Field(default=False, description="Send the ledger to the central server.")
    broker_url: str = Field(
        default="mqtts://central.example:8883",
        description="mqtt://host:port or mqtts://host:port (TLS).",
    )
    client_id: str = Field(
        default="", max_length=64, description="MQTT client id; empty means the lane id."
    )
    username: str = Field(default="", description="MQTT user name; empty means no login.")
    password: Secret | None = Field(
        default=None, description='MQTT password: string, {env = "..."} or {file = "..."}.'
    )
    hmac_key: Secret | None = Field(
        default=None, description="Key signing ledger batches: string, {env} or {file}."
    )
    ca_file: OptionalPath = Field(default=None, description="CA bundle for mqtts.")
    cert_file: OptionalPath = Field(default=None, description="Client certificate (mutual TLS).")
    key_file: OptionalPath = Field(
        default=None, description="Client key (mutual TLS); a secret file: mode 0600/0400."
    )
    allow_plaintext_credentials: bool = Field(
        default=False,
        description="Allow a password over mqtt:// (unencrypted); refused unless true.",
    )
    keepalive_s: int = Field(
        default=15, ge=5, le=30, description="MQTT keepalive; short so dead sockets show."
    )
    batch_max_entries: int = Field(
        default=200, ge=1, le=10_000, description="Ledger entries per uplink batch."
    )
    batch_max_bytes: int = Field(
        # at most the sync's 4 MiB message limit (central and the broker refuse more)
        default=65536, ge=1024, le=4 * 1024 * 1024, description="Bytes per uplink batch."
    )
    window: int = Field(default=4, ge=1, le=20, description="Batches in flight awaiting ack.")
    rules_public_key: str = Field(
        default="",
        description="Central's Ed25519 public key (64 hex digits or a PEM file path): rule "
        "bundles, member states, snapshots and the lane roster must verify with it.",
    )
    offline_overdraft: int = Field(
        default=0,
        ge=0,
        le=10_000,
        description="Points a lane may deduct beyond central's offline allowance per account.",
    )
    stall_alert_s: float = Field(
        default=300.0,
        ge=10.0,
        le=86_400.0,
        description="Alert (status backlog_stalled, metric, log) when entries wait and no "
        "ack advanced for this long.",
    )
    central_silence_s: float = Field(
        default=15.0,
        ge=1.0,
        le=3_600.0,
        description="Spend as offline (allowance) and report offline once central owes an "
        "ack this long, even while the MQTT link (a site broker) is up.",
    )

    @field_validator("broker_url")
    @classmethod
    def _broker(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or parts.path not in ("", "/"):
            raise ValueError(f"'{value}' is not mqtt://host:port or mqtts://host:port")
        parse_host_port(parts.netloc)
        return value

    @field_validator("rules_public_key")
    @classmethod
    def _public_key(cls, value: str) -> str:
        if value and not (
            re.fullmatch(r"[0-9A-Fa-f]{64}", value) or value.startswith(("/", "./", "~"))
        ):
            raise ValueError("must be 64 hex digits (Ed25519) or a path to a PEM file")
        return value

    @field_validator("key_file")
    @classmethod
    def _key_file_is_secret(cls, value: Path | None) -> Path | None:
        # A TLS private key follows the rule of every secret file (edge.config.secret);
        # a missing file is only an error when sync is enabled (below).
        if value is not None and value.exists():
            problem = secret_file_problem(value)
            if problem:
                raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _when_enabled(self) -> SyncConfig:
        errors: list[tuple[str, str]] = []
        if (
            self.password is not None
            and urlsplit(self.broker_url).scheme == "mqtt"
            and not self.allow_plaintext_credentials
        ):
            errors.append((
                "password",
                f"would be sent unencrypted over {self.broker_url} (sync.broker_url): use "
                "mqtts:// or set sync.allow_plaintext_credentials = true",
            ))
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            errors.append((missing, "cert_file and key_file go together"))
        if self.enabled:
            for name in ("password", "hmac_key"):
                secret: Secret | None = getattr(self, name)
                problem = secret.problem() if secret is not None else None
                if problem:
                    errors.append((name, problem))
            if self.password is not None and not self.username:
                errors.append(("username", "required when a password is set"))
            for name in ("ca_file", "cert_file", "key_file"):
                path: Path | None = getattr(self, name)
                if path is not None and not path.is_file():
                    errors.append((name, f"{path} does not exist"))
        if errors:
            raise CrossFieldErrors(errors)
        return self

    @property
    def broker(self) -> tuple[str, int, bool]:
        """(host, port, tls) parsed from broker_url."""
        parts = urlsplit(self.broker_url)
        host, port = parse_host_port(parts.netloc)
        return host, port, parts.scheme == "mqtts"


# --- [storage], [logging], [metrics] --------------------------------------------------------


class StorageConfig(Section):
    """The durable ledger (SQLite, WAL, synchronous=FULL)."""

    path: ConfigPath = Field(
        default=Path("/var/lib/parkedge/ledger.db"), description="SQLite ledger file."
    )
    # --- disk full and start-up checks (#12 items 3, 4; docs/lane.md, docs/ledger.md)
    min_free_bytes: int = Field(
        default=200_000_000, ge=0,
        description="Warn (log, metric parkedge_storage_low, status alert) when the ledger's "
        "filesystem has less free space than this; 0 = never.",
    )
    probe_s: float = Field(
        default=5.0, gt=0, le=300,
        description="How often the lane checks free space, updates the high-water mark and, "
        "while out of service, retries a ledger write.",
    )
    pending_dir: OptionalPath = Field(
        default=Path("/run/parkedge"),
        description="Where records that could not be written to the ledger (a manual open "
        "with a full disk) wait; must be another filesystem than the ledger's (default a "
        "tmpfs). Empty = memory only.",
    )
    startup_check: Literal["quick", "integrity", "full"] = Field(
        default="quick",
        description='Start-up check of the ledger: "quick" = PRAGMA quick_check and the chain '
        'since the high-water mark; "integrity" = PRAGMA integrity_check instead; "full" = '
        "integrity_check and the whole chain re-hashed (about 2 s per 100k entries).",
    )


class LoggingConfig(Section):
    """Log level and format (JSON lines to stdout are collected by journald)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="Minimum level logged."
    )
    format: Literal["json", "text"] = Field(
        default="json", description='"json" lines for journald, "text" for a terminal.'
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class MetricsConfig(Section):
    """Prometheus exporter."""

    listen: ListenAddress = Field(
        default="", description='host:port, e.g. "127.0.0.1:9108"; empty = off.'
    )


# --- the whole file -------------------------------------------------------------------------


class Config(Section):
    """One controller's config file."""

    lane: LaneConfig = Field(description="Lane identity, clock, timeouts and policies.")
    buses: dict[str, BusConfig] = Field(
        default_factory=dict, description="Named buses: one owner per RS-485 port / connection."
    )
    devices: DevicesConfig = Field(description="Barrier, loops and display.")
    camera: CameraConfig = Field(default_factory=CameraConfig, description="Plate source.")
    lpr: LprConfig = Field(default_factory=LprConfig, description="Plate recognition.")
    rules: RulesConfig = Field(default_factory=RulesConfig, description="Rule bundle.")
    sync: SyncConfig = Field(default_factory=SyncConfig, description="Central server sync.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Ledger file.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logging.")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Metrics.")

    @field_validator("buses")
    @classmethod
    def _bus_names(cls, value: dict[str, BusConfig]) -> dict[str, BusConfig]:
        bad = [n for n in value if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", n)]
        if bad:
            raise CrossFieldErrors([(n, "bus names are letters, digits, _ and -") for n in bad])
        return value

    @model_validator(mode="after")
    def _cross_check(self) -> Config:
        errors: list[tuple[str, str]] = []
        d = self.devices
        refs: list[tuple[str, str, bool]] = [
            ("devices.barrier.bus", d.barrier.bus, d.barrier.driver in MODBUS_DRIVERS),
            ("devices.display.bus", d.display.bus, False),
        ]
        if d.loops.driver == "modbus-inputs":
            refs.append(("devices.loops.bus", d.loops.bus, True))
        for path, name, wants_modbus in refs:
            bus = self.buses.get(name)
            if bus is None:
                known = ", ".join(sorted(self.buses)) or "none defined"
                errors.append((path, f"no bus named '{name}' in [buses] ({known})"))
                continue
            want = "modbus" if wants_modbus else "raw"
            if bus.protocol != want:
                errors.append(
                    (
                        path,
                        f'bus \'{name}\' has protocol "{bus.protocol}"; this driver needs "{want}"',
                    )
                )
        if d.barrier.driver in MODBUS_DRIVERS and d.barrier.unit not in range(1, 248):
            errors.append(("devices.barrier.unit", "a Modbus device id is 1..247"))
        if d.loops.driver == "modbus-inputs":
            if d.loops.unit not in range(1, 248):
                errors.append(("devices.loops.unit", "a Modbus device id is 1..247"))
            # Loops and barrier feedback on the same module must not share inputs.
            barrier_on_same_module = (
                d.barrier.driver in MODBUS_DRIVERS
                and d.barrier.bus == d.loops.bus
                and d.barrier.unit == d.loops.unit
            )
            if barrier_on_same_module:
                used = {
                    d.barrier.input_arm_up: "devices.barrier.input_arm_up",
                    d.barrier.input_arm_down: "devices.barrier.input_arm_down",
                    d.barrier.input_fault: "devices.barrier.input_fault",
                }
                for name in ("input_arming", "input_closing", "input_photocell"):
                    address = getattr(d.loops, name)
                    if address in used:
                        errors.append(
                            (
                                f"devices.loops.{name}",
                                f"input {address} is already used by "
                                f"{used[address]} on the same module",
                            )
                        )
        if errors:
            raise CrossFieldErrors(errors)
        return self

    @property
    def sync_client_id(self) -> str:
        """The MQTT client id: ``sync.client_id`` or, when empty, the lane id."""
        return self.sync.client_id or self.lane.id

    def model_dump_redacted(self) -> dict[str, Any]:
        """A JSON-safe dump for printing: secrets appear as ``***`` or their env/file reference."""
        from edge.config.redact import redact_mapping

        return redact_mapping(self.model_dump(mode="json"))
