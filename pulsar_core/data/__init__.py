"""Loading, validation, raw-export aggregation and the synthetic generator."""
