"""Shared test data and builders (imported by tests, never collected)."""
