"""Segments: a rule language over demographics, clinical facts, journey stage and behaviour."""
