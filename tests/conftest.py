"""Shared pytest setup."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _run_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run each test in its own temporary directory.

    trial's ``TestCase.mktemp()`` creates directories relative to the working directory; under
    pytest that would be the checkout.
    """
    monkeypatch.chdir(tmp_path)
