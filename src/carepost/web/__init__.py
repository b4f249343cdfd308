"""The web app (FastAPI). This issue builds its public part: unsubscribe, preferences, health."""
