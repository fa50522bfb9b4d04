"""Allow ``python -m netprobe_exporter``."""

from netprobe_exporter.cli import main

raise SystemExit(main())
