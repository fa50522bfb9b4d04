"""netprobe-exporter: continuous and blackbox-compatible network probing for Prometheus."""

import sys

__version__ = "0.1.0"


def python_version() -> str:
    """The running Python as ``3.11.7``, as ``--version`` and ``netprobe_build_info`` show it."""
    return ".".join(map(str, sys.version_info[:3]))
