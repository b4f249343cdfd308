"""Alembic migrations, shipped inside the package so `carepost db upgrade` works anywhere."""
