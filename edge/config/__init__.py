"""Controller configuration: typed TOML models, loading with key-path errors, secrets."""

from edge.config.addresses import BusEndpoint, parse_bus_url, parse_host_port
from edge.config.errors import ConfigError
from edge.config.loader import load_config, parse_config, parse_toml
from edge.config.models import (
    BarrierConfig,
    BusConfig,
    CameraConfig,
    Config,
    DevicesConfig,
    DisplayConfig,
    LaneConfig,
    LoggingConfig,
    LoopsConfig,
    LprConfig,
    MetricsConfig,
    RulesConfig,
    StorageConfig,
    SyncConfig,
)
from edge.config.secret import Secret, SecretError

__all__ = [
    "BarrierConfig",
    "BusConfig",
    "BusEndpoint",
    "CameraConfig",
    "Config",
    "ConfigError",
    "DevicesConfig",
    "DisplayConfig",
    "LaneConfig",
    "LoggingConfig",
    "LoopsConfig",
    "LprConfig",
    "MetricsConfig",
    "RulesConfig",
    "Secret",
    "SecretError",
    "StorageConfig",
    "SyncConfig",
    "load_config",
    "parse_bus_url",
    "parse_config",
    "parse_host_port",
    "parse_toml",
]
