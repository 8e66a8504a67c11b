"""Central's configuration: one TOML file, one pydantic model per section.

Every model forbids unknown keys, so a typo fails loudly with its key path instead of
silently falling back to a default. Paths are resolved against the config file's folder.
"""

from __future__ import annotations

import ipaddress
import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from central.config.secret import Secret

_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteConfig(Section):
    site_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                         description="the site's id, as the lanes know it")
    timezone: str = Field(description="IANA zone of the site: months of the figures, "
                                      "job times, local days of the daily earning cap")
    language: Literal["zh", "en"] = Field(default="zh", description="pages' default language")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (e.g. Asia/Shanghai)") from None
        return v

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class DatabaseConfig(Section):
    url: str = Field(default="sqlite:///central.db",
                     description="SQLAlchemy URL: sqlite:///PATH (embedded, one site trial) or "
                                 "postgresql+psycopg://USER@HOST/DB (production)")
    password: Secret | None = Field(default=None,
                                    description="PostgreSQL password (file or env)")
    migrate_on_start: bool = Field(default=False,
                                   description="run `migrate` when `serve` starts")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not (v.startswith("sqlite:///") or v.startswith("postgresql+psycopg://")):
            raise ValueError("must start with sqlite:/// or postgresql+psycopg://")
        head = v.split("://", 1)[1].split("@", 1)
        if len(head) == 2 and ":" in head[0]:
            raise ValueError("holds a password: put it in database.password "
                             '({file = "/path"} or {env = "VARIABLE"})')
        return v

    @model_validator(mode="after")
    def _password_only_for_postgresql(self) -> DatabaseConfig:
        # SQLite has no password: SQLAlchemy would fail with a traceback at the first connect
        if self.password is not None and self.url.startswith("sqlite:///"):
            raise ValueError("password: SQLite has none; drop database.password or use "
                             "a postgresql+psycopg:// url")
        return self


class RulesConfig(Section):
    bundle: Path = Field(description="the site's rule bundle (TOML, as `parkedge rules check`)")


class WebConfig(Section):
    listen: str = Field(default="127.0.0.1",
                        description="address to serve on; anything but loopback needs "
                                    "tls_cert/tls_key and an admin account")
    port: int = Field(default=8080, ge=1, le=65535)
    tls_cert: Path | None = None
    tls_key: Secret | None = Field(default=None,
                                   description="TLS private key file ({file = ...})")
    session_hours: int = Field(default=12, ge=1, le=24 * 30)
    max_body_bytes: int = Field(default=256 * 1024, ge=1024, le=64 * 1024 * 1024)
    login_max_failures: int = Field(default=5, ge=1, le=1000, description="failed logins per "
                                    "account (or per client address) within the window")
    login_window_minutes: int = Field(default=15, ge=1, le=24 * 60)
    forwarded_allow_ips: str | None = Field(
        default=None, description="a reverse proxy's address whose X-Forwarded-* headers "
                                  "are trusted")

    @field_validator("listen")
    @classmethod
    def _addr(cls, v: str) -> str:
        if v == "localhost":
            return v
        try:
            ipaddress.ip_address(v)
        except ValueError:
            raise ValueError("must be an IP address (or localhost)") from None
        return v

    @model_validator(mode="after")
    def _tls_pair(self) -> WebConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_key is not None and self.tls_key.kind != "file":
            raise ValueError("tls_key must be a {file = ...} (uvicorn reads the file)")
        return self

    @property
    def loopback(self) -> bool:
        return self.listen == "localhost" or ipaddress.ip_address(self.listen).is_loopback


class PointsConfig(Section):
    cost_per_point: Decimal = Field(default=Decimal("0.05"), ge=0, le=1000, allow_inf_nan=False,
                                    description="yuan one issued point costs the mall "
                                                "(figures: cost of points issued)")


class PosConfig(Section):
    max_age_days: int = Field(default=35, ge=1, le=400, description="oldest purchase accepted")
    future_minutes: int = Field(default=10, ge=0, le=24 * 60, description="clock skew allowed")
    max_amount: Decimal = Field(default=Decimal("1000000"), gt=0, allow_inf_nan=False)


HHMM = Annotated[str, Field(pattern=_HHMM.pattern, description="HH:MM, site time")]


class JobsConfig(Section):
    enabled: bool = Field(default=True, description="run the scheduler inside `serve`")
    expiry_at: HHMM = "00:10"
    perks_day: int = Field(default=1, ge=1, le=28,
                           description="day of the month perks are granted")
    perks_at: HHMM = "00:20"


class MetricsConfig(Section):
    listen: str = Field(default="", description='Prometheus exporter "127.0.0.1:9110"; '
                                                "empty = off")

    @field_validator("listen")
    @classmethod
    def _hostport(cls, v: str) -> str:
        if not v:
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError('must be "host:port", e.g. "127.0.0.1:9110"')
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            raise ValueError("host must be an IP address") from None
        return v


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_lines: bool = Field(default=True,
                             description="one JSON object per log line (journald)")


class MqttConfig(Section):
    """The site's broker, as the lanes use it (docs/sync-protocol.md)."""

    broker: str = Field(default="127.0.0.1:1883", description='"host:port" of the broker')
    client_id: str = Field(default="", max_length=64, description="default "
                           "central-<host>-<pid>: every worker needs its own")
    username: str | None = None
    password: Secret | None = None
    ca_file: Path | None = Field(default=None, description="CA bundle: TLS to the broker")
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = Field(default=15, ge=5, le=30)

    @field_validator("broker")
    @classmethod
    def _hostport(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError('must be "host:port", e.g. "127.0.0.1:1883"')
        return v

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.broker.rpartition(":")
        return host.strip("[]"), int(port)


class LaneConfig(Section):
    id: str = Field(min_length=1, max_length=64, pattern=r"^\w+(?:[-.]\w+)*$",
                    description="the lane id (its store's lane_id, its MQTT client id)")
    name: str = Field(default="", max_length=200)
    kind: Literal["entry", "exit"]
    key: Secret | None = Field(default=None, description="the lane's sync.hmac_key; default "
                                                         "{file = <keys_dir>/<id>.key}")


class IngestConfig(Section):
    """The lanes' ledgers in, acks and signed states out (central/ingest)."""

    enabled: bool = Field(default=False, description="`serve` also runs an ingest worker")
    signing_key: Secret | None = Field(
        default=None, description="central's Ed25519 key, PEM (`keygen`): {file = ...}")
    keys_dir: Path | None = Field(default=None, description="folder of <lane>.key files "
                                                            "(0600), the lanes' HMAC keys")
    lanes: list[LaneConfig] = Field(default_factory=list)
    allowance: int = Field(default=100, ge=0, le=10**9,
                           description="points a lane may deduct offline per account")
    share_group: str = Field(default="central", pattern=r"^[A-Za-z0-9_-]{0,32}$",
                             description="MQTT shared subscription group of the workers; "
                                         '"" = plain subscriptions, one worker (RabbitMQ '
                                         "3.10 delivers nothing on $share, docs/brokers.md)")
    group_max: int = Field(default=32, ge=1, le=1000,
                           description="batches committed in one transaction at most")
    publish_interval_s: float = Field(default=0.5, gt=0, le=60,
                                      description="member states / outbox poll")
    stall_alert_s: float = Field(default=300.0, gt=0, le=86400)

    @model_validator(mode="after")
    def _keys(self) -> IngestConfig:
        ids = [lane.id for lane in self.lanes]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"lanes: {', '.join(dup)} listed twice")
        for lane in self.lanes:
            if lane.key is None and self.keys_dir is None:
                raise ValueError(f"lanes: {lane.id} has no key and no keys_dir is set")
        if self.enabled and self.signing_key is None:
            raise ValueError("signing_key: required when enabled")
        if self.signing_key is not None and self.signing_key.kind != "file":
            raise ValueError("signing_key must be a {file = ...} (PEM from `keygen`)")
        return self

    def lane_key(self, lane: LaneConfig) -> Secret:
        if lane.key is not None:
            return lane.key
        assert self.keys_dir is not None  # checked above
        return Secret("file", str(self.keys_dir / f"{lane.id}.key"))


class CentralConfig(Section):
    site: SiteConfig
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    rules: RulesConfig
    web: WebConfig = Field(default_factory=WebConfig)
    points: PointsConfig = Field(default_factory=PointsConfig)
    pos: PosConfig = Field(default_factory=PosConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
