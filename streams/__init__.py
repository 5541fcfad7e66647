"""touchstream streams: the monitoring engine and the Kafka workers."""
