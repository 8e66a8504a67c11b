"""Secrets: resolved late, refused when too readable, never shown by repr or dumps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from edge.config import ConfigError, Secret, SecretError, parse_config
from edge.config.secret import read_secret_file

EXAMPLES = Path(__file__).resolve().parents[2] / "config"
VALUE = "hunter2-very-secret-value"
ROOT = Path(__file__).resolve().parents[2]


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


# --- one rule for every secret file (#12 item 10) ---------------------------------------------


def test_file_owned_by_another_account_rejected(tmp_path: Path) -> None:
    # An owner-only key that another account owns can be swapped or read by that account.
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another uid")
    key = write_secret(tmp_path / "hmac.key", 0o600)
    os.chown(key, 54321, 54321)
    with pytest.raises(SecretError, match="owned by uid 54321"):
        Secret.from_file(key).get()
    with pytest.raises(ConfigError) as info:
        parse_config(exit_config(hmac_key={"file": str(key)}))
    ((path, reason),) = info.value.errors
    assert path == "sync.hmac_key" and "owned by" in reason and "root" in reason
    os.chown(key, 0, 0)
    assert Secret.from_file(key).get() == VALUE


def test_read_secret_file_names_the_key(tmp_path: Path) -> None:
    key = write_secret(tmp_path / "rules.key", 0o644)
    with pytest.raises(SecretError) as info:
        read_secret_file(key, key="--signing-key")
    assert str(info.value).startswith("--signing-key: secret file ")
    assert "0644" in str(info.value) and str(key) in str(info.value)
    os.chmod(key, 0o400)
    assert read_secret_file(key) == (VALUE + "\n").encode()
    with pytest.raises(SecretError, match=r"sync\.key_file: secret file .* does not exist"):
        read_secret_file(tmp_path / "absent", key="sync.key_file")


@pytest.mark.parametrize("mode", [0o644, 0o640])
def test_tls_private_key_follows_the_secret_rule(tmp_path: Path, mode: int) -> None:
    cert = write_secret(tmp_path / "lane.pem", 0o644, "-----BEGIN CERTIFICATE-----\n")
    key = write_secret(tmp_path / "lane.key", mode, "-----BEGIN PRIVATE KEY-----\n")
    with pytest.raises(ConfigError) as info:
        parse_config(exit_config(cert_file=str(cert), key_file=str(key)))
    ((path, reason),) = info.value.errors
    assert path == "sync.key_file"
    assert f"{mode:04o}" in reason and str(key) in reason
    os.chmod(key, 0o600)  # the certificate is public: 0644 is fine for it
    cfg = parse_config(exit_config(cert_file=str(cert), key_file=str(key)))
    assert cfg.sync.key_file == key


def test_password_over_plain_mqtt_refused_unless_allowed() -> None:
    plain = "mqtt://central.example:1883"
    with pytest.raises(ConfigError) as info:
        parse_config(exit_config(broker_url=plain, password=VALUE))
    ((path, reason),) = info.value.errors
    assert path == "sync.password"
    assert "unencrypted" in reason and "sync.allow_plaintext_credentials" in reason
    assert VALUE not in reason
    # Also when the password is a reference: it is sent in clear all the same.
    with pytest.raises(ConfigError, match=r"sync\.password"):
        parse_config(exit_config(broker_url=plain, password={"env": "PE_ANY"}))
    ok = parse_config(exit_config(broker_url=plain, password=VALUE,
                                  allow_plaintext_credentials=True))
    assert ok.sync.allow_plaintext_credentials is True
    # TLS, or no password at all (a bench broker), need no exception.
    parse_config(exit_config(broker_url="mqtts://central.example:8883", password=VALUE))
    parse_config(exit_config(broker_url=plain, password=None, username=""))


# --- central (parkedge-central): keys from files, never argv --------------------------------


def _central_config(tmp_path: Path, **mqtt: Any) -> Path:
    """A parkedge-central config whose ingest reads the site key and lane keys from files."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    if not (tmp_path / "signing.pem").exists():
        write_secret(tmp_path / "signing.pem", 0o600, pem)
    (tmp_path / "lanes").mkdir(exist_ok=True)
    extra = "".join(f'{k} = "{v}"\n' for k, v in mqtt.items())
    cfg = tmp_path / "central.toml"
    cfg.write_text(f"""[site]
site_id = "mall"
timezone = "Asia/Shanghai"
[database]
url = "sqlite:///{tmp_path / 'c.db'}"
migrate_on_start = true
[rules]
bundle = "{ROOT / 'config' / 'rules.example.toml'}"
[mqtt]
broker = "127.0.0.1:1"
{extra}[ingest]
signing_key = {{ file = "{tmp_path / 'signing.pem'}" }}
keys_dir = "{tmp_path / 'lanes'}"
lanes = [{{ id = "entry-1", kind = "entry" }}]
""", encoding="utf-8")
    return cfg


def _worker(cfg: Path) -> Any:
    from central.app import Central
    from central.config import load_config

    return Central.from_config(load_config(cfg)).ingest_worker("secrets-test")


def _ingest(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "central", "ingest", "--config", str(cfg),
                           *args], capture_output=True, text=True, timeout=60)


def test_central_signing_key_follows_the_secret_rule(tmp_path: Path) -> None:
    from central.config import SecretError as CentralSecretError

    cfg = _central_config(tmp_path)
    write_secret(tmp_path / "lanes" / "entry-1.key", 0o600)
    _worker(cfg)  # owner-only: taken
    os.chmod(tmp_path / "signing.pem", 0o644)
    with pytest.raises(CentralSecretError, match=r"signing.pem.*0644"):
        _worker(cfg)


def test_central_refuses_lane_keys_on_the_command_line(tmp_path: Path) -> None:
    """parkedge-central has no option that takes a key: a key on argv is a usage error."""
    cfg = _central_config(tmp_path)
    r = _ingest(cfg, "--lane-key", f"entry-1={VALUE}")
    assert r.returncode == 2 and "--lane-key" in r.stderr
    helps = [subprocess.run([sys.executable, "-m", "central", *cmd, "--help"],
                            capture_output=True, text=True, timeout=60).stdout
             for cmd in (["ingest"], ["serve"])]
    assert not any("key" in h.lower() for h in helps), helps


def test_central_refuses_an_open_lane_key_file(tmp_path: Path) -> None:
    cfg = _central_config(tmp_path)
    write_secret(tmp_path / "lanes" / "entry-1.key", 0o644)
    r = _ingest(cfg)
    assert r.returncode == 2
    assert "entry-1.key" in r.stderr and "0644" in r.stderr


def test_central_reads_lane_keys_from_files_not_argv(tmp_path: Path) -> None:
    cfg = _central_config(tmp_path)
    key = write_secret(tmp_path / "lanes" / "entry-1.key", 0o600)
    # The same bytes the lane signs with (Secret.get() of its sync.hmac_key file).
    lane_side = Secret.from_file(key).get().encode("utf-8")
    assert _worker(cfg).lane_keys == {"entry-1": lane_side}
    proc = subprocess.Popen([sys.executable, "-m", "central", "ingest", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Right after fork the child's cmdline is the parent's, or empty mid-exec: wait for
        # the exec (a loaded machine can take a while) before looking.
        deadline = time.monotonic() + 30
        cmdline = b""
        while str(cfg).encode() not in cmdline and time.monotonic() < deadline:
            cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
            time.sleep(0.05)
        assert str(cfg).encode() in cmdline and VALUE.encode() not in cmdline
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_central_tls_private_key_follows_the_secret_rule(tmp_path: Path) -> None:
    from central.config import SecretError as CentralSecretError

    key = write_secret(tmp_path / "central.key", 0o644, "-----BEGIN PRIVATE KEY-----\n")
    cfg = _central_config(tmp_path, ca_file=tmp_path / "ca.pem", cert_file=tmp_path / "c.pem",
                          key_file=key)
    write_secret(tmp_path / "lanes" / "entry-1.key", 0o600)
    with pytest.raises(CentralSecretError, match=r"mqtt.key_file: secret file .*0644"):
        _worker(cfg)
