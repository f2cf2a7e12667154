"""The steps of the transfer-learning recipe and the machinery they need (no Prefect flows here)."""
