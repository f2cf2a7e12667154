"""Drift monitoring: the incoming batch, what the champion sees in it, the MMD two-sample test
and its report. Imports the layers below (core to registry)."""
