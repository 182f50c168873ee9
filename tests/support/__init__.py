"""Real services for tests: a nats-server subprocess and a local MLflow store."""
