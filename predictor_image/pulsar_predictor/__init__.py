"""pulsar_predictor."""
