"""Validation of the stack-mode and cluster-mode files in deploy/ with the real tools."""
