"""Accounts, their passwords and API keys; later domains, plans, quotas and suppressions."""
