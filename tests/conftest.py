"""Shared pytest setup."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import blackbox, procutil

TIERS = ("unit", "integration", "system")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its tier, the directory under tests/ it lives in."""
    root = Path(__file__).parent
    for item in items:
        tier = item.path.relative_to(root).parts[0]
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(autouse=True)
def _run_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run each test in its own temporary directory.

    trial's ``TestCase.mktemp()`` creates directories relative to the working directory; under
    pytest that would be the checkout.
    """
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[procutil.Processes]:
    """Processes started by one test, all stopped at its end."""
    p = procutil.Processes(tmp_path)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def listener() -> Iterator[int]:
    """A loopback port that accepts connections."""
    with procutil.loopback_listener() as port:
        yield port


@pytest.fixture(scope="module")
def bb(config_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[blackbox.Blackbox]:
    """The real blackbox_exporter on the module's ``config_file``."""
    with blackbox.start_blackbox(config_file, tmp_path_factory.mktemp("blackbox")) as b:
        yield b


@pytest.fixture(scope="module")
def ours(
    config_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[procutil.Exporter]:
    """Our exporter on the same ``config_file``, for the differential tests."""
    procs = procutil.Processes(tmp_path_factory.mktemp("ours"))
    try:
        yield procs.start_exporter(f"--config.file={config_file}")
    finally:
        procs.close()
