"""The SMTP session engine: protocol, TLS, AUTH, limits. It knows nothing of accounts.

A `Handler` (the submission policy or the inbound policy, chosen by `mailrelay.router` on
port 25) decides; the engine acts.
"""
