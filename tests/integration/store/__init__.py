"""Migrations, accounts and the queue reader on SQLite and PostgreSQL."""
