"""Prefect flows that chain the tasks, and the `ftrl` command line."""
