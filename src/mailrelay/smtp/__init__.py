"""The SMTP session engine: protocol, TLS, AUTH, limits. It knows nothing of accounts.

A `Handler` (the submission policy, later the inbound policy) decides; the engine acts.
"""
