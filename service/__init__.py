"""touchstream's service layer: the HTTP API, the Prometheus exporter and the CLI."""
