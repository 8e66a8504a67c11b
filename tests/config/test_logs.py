"""Logging: JSON lines with extra fields, and secrets never reach the output."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from decimal import Decimal

import pytest

from edge.config import Secret
from edge.config.models import LoggingConfig
from edge.logs import add_sensitive, setup_logging

VALUE = "mqtt-pass-5f1c9e"


@pytest.fixture
def capture() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = setup_logging(LoggingConfig(level="DEBUG", format="json"), stream=stream)
    yield stream
    logging.getLogger().removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_fields_and_extras(capture: io.StringIO) -> None:
    log = logging.getLogger("edge.lane.test")
    log.info("exit %s", "粤B12345", extra={"lane": "X1", "fee": Decimal("12.50"), "points": 300})
    (rec,) = lines(capture)
    assert rec["msg"] == "exit 粤B12345"
    assert rec["level"] == "INFO" and rec["logger"] == "edge.lane.test"
    assert rec["lane"] == "X1" and rec["fee"] == "12.50" and rec["points"] == 300
    assert str(rec["ts"]).endswith("+00:00")


def test_level_filters(capture: io.StringIO) -> None:
    setup_logging(LoggingConfig.model_validate({"level": "warning"}), stream=capture)
    logging.getLogger("x").info("hidden")
    logging.getLogger("x").warning("shown")
    assert [r["msg"] for r in lines(capture)] == ["shown"]


def test_secrets_never_logged(capture: io.StringIO) -> None:
    log = logging.getLogger("edge.sync.test")
    secret = Secret(VALUE)
    log.info("connecting with %s", secret)
    log.info("creds", extra={"password": VALUE, "hmac_key": "abc123def", "cfg": {"token": VALUE}})
    log.info("object", extra={"auth": secret})
    add_sensitive(VALUE)
    log.warning("broker said: bad password %s", VALUE)
    try:
        raise RuntimeError(f"login failed for {VALUE}")
    except RuntimeError:
        log.exception("sync error")
    out = capture.getvalue()
    assert VALUE not in out and "abc123def" not in out
    recs = lines(capture)
    assert recs[0]["msg"] == "connecting with ***"
    assert recs[1]["password"] == "***" and recs[1]["cfg"] == {"token": "***"}
    assert recs[2]["auth"] == "***"
    assert recs[3]["msg"] == "broker said: bad password ***"
    assert "login failed for ***" in str(recs[4]["exc"])


def test_text_format_also_redacts() -> None:
    stream = io.StringIO()
    handler = setup_logging(LoggingConfig(level="INFO", format="text"), stream=stream)
    try:
        logging.getLogger("t").info("hello", extra={"password": VALUE, "lane": "E1"})
    finally:
        logging.getLogger().removeHandler(handler)
    out = stream.getvalue()
    assert "hello" in out and "lane=E1" in out and "password=***" in out
    assert VALUE not in out


def test_setup_is_idempotent() -> None:
    root = logging.getLogger()
    before = len(root.handlers)
    h1 = setup_logging(LoggingConfig(), stream=io.StringIO())
    h2 = setup_logging(LoggingConfig(), stream=io.StringIO())
    try:
        assert h1 not in root.handlers and h2 in root.handlers
        assert len(root.handlers) == before + 1
    finally:
        root.removeHandler(h2)


def test_mapping_args_and_bad_format_do_not_crash(capture: io.StringIO) -> None:
    log = logging.getLogger("t")
    log.info("lane %(lane)s key %(key)s", {"lane": "X1", "key": Secret(VALUE)})
    log.info("two placeholders %s %s", "only-one")
    recs = lines(capture)
    assert recs[0]["msg"] == "lane X1 key ***"
    assert str(recs[1]["msg"]).startswith("two placeholders")
    assert VALUE not in capture.getvalue()
