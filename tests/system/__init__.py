"""System tier: subprocesses, real Prometheus and blackbox_exporter, namespaces, image, deploy."""
