"""Hydra configuration groups for wavegen (installed as the package `wavegen.conf`)."""
