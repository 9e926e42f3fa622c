"""Persistence: one SQLAlchemy implementation for SQLite and PostgreSQL, with migrations,
storage health and free space, and the event log."""
