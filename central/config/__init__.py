"""Central's configuration: TOML -> pydantic models, key path in every error."""

from central.config.loader import ConfigError, check, load_config, load_rules, parse_config
from central.config.models import CentralConfig
from central.config.secret import Secret, SecretError

__all__ = ["CentralConfig", "ConfigError", "Secret", "SecretError", "check", "load_config",
           "load_rules", "parse_config"]
