"""pulsar_trainer."""
