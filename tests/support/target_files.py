"""The target_files config the unit and system tests share."""

from __future__ import annotations

import textwrap
from pathlib import Path


def config_for(tmp_path: Path, extra: str = "") -> str:
    return textwrap.dedent(
        f"""\
        modules:
          web: {{prober: http}}
        targets:
          - address: 127.0.0.1:1
        target_files:
          - files: [{tmp_path}/sd/*.json, {tmp_path}/sd/*.yml]
            interval: 2s
            labels: {{source: sd}}
            refresh_interval: 1s
          - files: [{tmp_path}/web/*.yaml]
            module: web
        {extra}"""
    )
