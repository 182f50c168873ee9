"""Forecasting models: ElasticNet, the temporal CNN and the simple baselines."""
