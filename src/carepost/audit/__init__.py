"""Tamper-evident audit chain: append, verify, signed checkpoints."""
