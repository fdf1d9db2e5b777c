"""Serving models safely under live traffic: the live model and its hot swap, canary, shadow,
confidence-gated cascade and prediction cache, all driven by the topology's ``serving`` section."""
