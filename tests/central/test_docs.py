"""docs/central.md's example config is a valid config (the docs cannot drift from the models)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from central.config import parse_config
from central.config.models import CentralConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "central.md"


def test_example_config_in_docs_parses() -> None:
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"<!-- example-config.*?-->\n```toml\n(.*?)```", text, re.S)
    assert block is not None
    cfg = parse_config(tomllib.loads(block.group(1)))
    assert isinstance(cfg, CentralConfig)
    assert cfg.site.timezone == "Asia/Shanghai" and cfg.web.loopback
    assert cfg.database.password is not None and cfg.database.password.kind == "file"
    # every key of every section is documented in the table
    for name, field in CentralConfig.model_fields.items():
        assert f"| `{name}` |" in text, name
        sub = field.annotation
        for key in getattr(sub, "model_fields", {}):
            assert f"`{key}`" in text, f"{name}.{key}"
