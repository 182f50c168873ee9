"""pulsar_operator."""
