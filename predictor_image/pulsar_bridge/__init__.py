"""The signal bridge: ClickHouse (or a raw NATS subject) -> pulsar.signals.<city>.<service>."""
