"""Engagement tracking: the event store (the classifier and endpoints come later)."""
