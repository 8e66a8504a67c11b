"""Fixtures shared across test folders: headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package: no browser download
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per test module (``make sysdeps`` installs it)."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("apt-get install chromium")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One RabbitMQ node (MQTT plugin) of the tests' own per session: its own node name,
    ports, data folder and cookie (``parkedge_sim.rabbitmq``); it takes seconds to start, so
    it is shared. ``make sysdeps`` installs Debian's rabbitmq-server."""
    from parkedge_sim.rabbitmq import RabbitMQBroker, rabbitmq_installed

    if not rabbitmq_installed():
        pytest.skip("apt-get install rabbitmq-server")
    b = RabbitMQBroker(tmp_path_factory.mktemp("rabbitmq"))
    try:
        b.start()
        yield b
    finally:
        b.stop()  # also after a failed start: its folder and any process it left
