"""mailrelay: a self-hosted email delivery service (SMTP submission, durable queue, relay)."""

__version__ = "0.1.0"
