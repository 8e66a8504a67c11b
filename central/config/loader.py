"""Reading central's TOML: every problem reported with the key path to edit."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from central.config.models import CentralConfig
from edge.pricing import BundleError, RuleBundle, load_bundle


class ConfigError(Exception):
    """A config was rejected; ``errors`` lists (key path, reason)."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = list(errors)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(f"{p}: {r}" if p else r for p, r in self.errors)


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _reason(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def _resolve(data: dict[str, Any], base: Path) -> None:
    """Relative file paths are relative to the config file, not to the working folder."""
    def fix(section: str, key: str) -> None:
        sec = data.get(section)
        if isinstance(sec, dict) and isinstance(sec.get(key), str):
            p = Path(sec[key]).expanduser()
            sec[key] = str(p if p.is_absolute() else base / p)
    fix("rules", "bundle")
    fix("web", "tls_cert")
    for key in ("keys_dir",):
        fix("ingest", key)
    for key in ("ca_file", "cert_file", "key_file"):
        fix("mqtt", key)
    ing = data.get("ingest")
    if isinstance(ing, dict) and isinstance(ing.get("signing_key"), dict) and \
            isinstance(ing["signing_key"].get("file"), str):
        ing["signing_key"] = dict(ing["signing_key"])
        p = Path(ing["signing_key"]["file"]).expanduser()
        ing["signing_key"]["file"] = str(p if p.is_absolute() else base / p)
    web = data.get("web")
    if isinstance(web, dict) and isinstance(web.get("tls_key"), dict) and \
            isinstance(web["tls_key"].get("file"), str):
        p = Path(web["tls_key"]["file"]).expanduser()
        web["tls_key"]["file"] = str(p if p.is_absolute() else base / p)
    db = data.get("database")
    if isinstance(db, dict) and isinstance(db.get("url"), str) and \
            db["url"].startswith("sqlite:///") and not db["url"].startswith("sqlite:////"):
        rel = db["url"].removeprefix("sqlite:///")
        if rel and rel != ":memory:":
            db["url"] = "sqlite:///" + str(base / rel)


def parse_config(data: dict[str, Any], base: Path = Path(".")) -> CentralConfig:
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    _resolve(data, base)
    try:
        return CentralConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([(_path(e["loc"]), _reason(e)) for e in exc.errors()]) from None


def load_config(path: str | Path) -> CentralConfig:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([("", f"config file {p} does not exist")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([("", f"config file {p} cannot be read: {exc}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("", f"{p}: not valid TOML: {exc}")]) from None
    return parse_config(data, p.resolve().parent)


def load_rules(cfg: CentralConfig) -> RuleBundle:
    """The site's bundle; its time zone must be the site's (one calendar for everything)."""
    try:
        rules = load_bundle(cfg.rules.bundle)
    except BundleError as exc:
        raise ConfigError([(f"rules.bundle ({cfg.rules.bundle}) {p}".strip(), r)
                           for p, r in exc.errors]) from None
    except OSError as exc:
        raise ConfigError([("rules.bundle", f"cannot be read: {exc}")]) from None
    if str(rules.tz) != cfg.site.timezone:
        raise ConfigError([("site.timezone", f"{cfg.site.timezone} differs from the rule "
                            f"bundle's timezone {rules.tz}")])
    return rules


def check(cfg: CentralConfig) -> list[tuple[str, str]]:
    """Problems that only show at run time: unreadable secrets, missing files, the bundle."""
    errs: list[tuple[str, str]] = []
    if cfg.database.password is not None and (p := cfg.database.password.problem()):
        errs.append(("database.password", p))
    if cfg.web.tls_cert is not None and not cfg.web.tls_cert.is_file():
        errs.append(("web.tls_cert", f"{cfg.web.tls_cert} does not exist"))
    if cfg.web.tls_key is not None and (p := cfg.web.tls_key.problem()):
        errs.append(("web.tls_key", p))
    if cfg.ingest.signing_key is not None and (p := cfg.ingest.signing_key.problem()):
        errs.append(("ingest.signing_key", p))
    for i, lane in enumerate(cfg.ingest.lanes):
        if (p := cfg.ingest.lane_key(lane).problem()):
            errs.append((f"ingest.lanes[{i}].key", p))
    try:
        load_rules(cfg)
    except ConfigError as exc:
        errs.extend(exc.errors)
    return errs
