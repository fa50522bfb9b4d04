"""netprobe-exporter: continuous and blackbox-compatible network probing for Prometheus."""

__version__ = "0.1.0"
