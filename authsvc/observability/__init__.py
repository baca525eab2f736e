"""Metrics, request logs and request ids."""
