"""Data checks before any training: odd inputs, the cross-check of two labellers, the Great
Expectations quality suite, the label audit (cleanlab) and leakage across splits. Imports
tasks.core, tasks.config, tasks.data and tasks.models."""
