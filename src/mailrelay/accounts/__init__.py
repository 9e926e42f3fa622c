"""Accounts, their passwords and API keys, sender and inbound domains, and suppressions."""
