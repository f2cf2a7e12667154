"""Training: the one fit loop, the metrics and the contract, the frozen-prefix cache, random
states. Imports tasks.core, tasks.config, tasks.data and tasks.models."""
