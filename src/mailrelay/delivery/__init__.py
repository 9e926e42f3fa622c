"""Outbound delivery: MX routing, the SMTP client, reply classification, bounces (DSN)."""
