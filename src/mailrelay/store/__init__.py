"""Persistence: one SQLAlchemy implementation for SQLite and PostgreSQL, with migrations."""
