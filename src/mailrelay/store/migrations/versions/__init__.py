"""Alembic revisions, oldest first. Each must keep `store/schema.py` and the database equal."""
