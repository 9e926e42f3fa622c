"""The `mailrelay` command run as a subprocess against SQLite and PostgreSQL."""
