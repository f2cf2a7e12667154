"""Prefect flows and the `transferflow` command line."""
