"""The `pulsar` console script: one entry point that dispatches to each part's own CLI."""
