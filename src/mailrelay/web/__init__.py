"""The web dashboard: server-rendered pages beside the HTTP API (same process and port)."""
