"""The ``io.prometheus.client`` protobuf schema (prometheus/client_model), for the exposition."""
