"""Secrets: resolved late, refused when too readable, never shown by repr or dumps."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest

from edge.config import ConfigError, Secret, SecretError, parse_config

EXAMPLES = Path(__file__).resolve().parents[2] / "config"
VALUE = "hunter2-very-secret-value"


def exit_config(**sync: Any) -> dict[str, Any]:
    with (EXAMPLES / "exit.example.toml").open("rb") as fh:
        data = tomllib.load(fh)
    data["sync"].update(sync)
    return data


def write_secret(path: Path, mode: int, text: str = VALUE + "\n") -> Path:
    path.write_text(text, encoding="utf-8")
    os.chmod(path, mode)
    return path


def test_literal_env_and_file_resolve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PE_TEST_PW", VALUE)
    key = write_secret(tmp_path / "hmac.key", 0o600)
    cfg = parse_config(
        exit_config(enabled=True, password={"env": "PE_TEST_PW"}, hmac_key={"file": str(key)})
    )
    assert cfg.sync.password is not None and cfg.sync.hmac_key is not None
    assert cfg.sync.password.get() == VALUE
    assert cfg.sync.hmac_key.get() == VALUE  # trailing newline stripped
    assert Secret("x").get() == "x"


def test_file_secret_read_lazily(tmp_path: Path) -> None:
    key = write_secret(tmp_path / "hmac.key", 0o400, "old")
    secret = Secret.from_file(key)
    assert secret.get() == "old"
    os.chmod(key, 0o600)
    key.write_text("rotated", encoding="utf-8")
    assert secret.get() == "rotated"


@pytest.mark.parametrize("mode", [0o640, 0o644, 0o604, 0o660])
def test_group_or_world_readable_file_rejected(tmp_path: Path, mode: int) -> None:
    key = write_secret(tmp_path / "hmac.key", mode)
    with pytest.raises(ConfigError) as info:
        parse_config(exit_config(hmac_key={"file": str(key)}))
    ((path, reason),) = info.value.errors
    assert path == "sync.hmac_key"
    assert f"{mode:04o}" in reason and "0600" in reason
    with pytest.raises(SecretError, match="readable by group/others"):
        Secret.from_file(key).get()


def test_enabled_sync_checks_every_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PE_UNSET_VAR", raising=False)
    with pytest.raises(ConfigError) as info:
        parse_config(
            exit_config(
                enabled=True,
                password={"env": "PE_UNSET_VAR"},
                hmac_key={"file": str(tmp_path / "absent.key")},
            )
        )
    errors = dict(info.value.errors)
    assert "PE_UNSET_VAR is not set" in errors["sync.password"]
    assert "does not exist" in errors["sync.hmac_key"]
    # Disabled sync: references need not resolve on a bench.
    assert parse_config(exit_config(enabled=False)).sync.enabled is False


def test_empty_secret_file(tmp_path: Path) -> None:
    key = write_secret(tmp_path / "k", 0o600, "\n")
    with pytest.raises(SecretError, match="empty"):
        Secret.from_file(key).get()


def test_repr_str_format_and_dumps_never_show_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PE_TEST_PW", VALUE)
    cfg = parse_config(exit_config(password=VALUE, hmac_key={"env": "PE_TEST_PW"}))
    assert cfg.sync.password is not None
    for text in (
        repr(cfg.sync.password),
        str(cfg.sync.password),
        f"{cfg.sync.password}",
        repr(cfg),
        str(cfg.sync),
        json.dumps(cfg.model_dump(mode="json")),
        json.dumps(cfg.model_dump_redacted()),
        cfg.model_dump_json(),
    ):
        assert VALUE not in text
    assert repr(cfg.sync.password) == "Secret('***')"
    dumped = cfg.model_dump_redacted()["sync"]
    assert dumped["password"] == "***"
    assert dumped["hmac_key"] == {"env": "PE_TEST_PW"}  # the reference is not secret


def test_secret_is_not_picklable() -> None:
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(Secret(VALUE))


def test_config_with_secrets_can_be_deep_copied() -> None:
    cfg = parse_config(exit_config(password=VALUE))
    copy_ = cfg.model_copy(deep=True)
    assert copy_ == cfg
    assert copy_.sync.password is not None and copy_.sync.password.get() == VALUE
