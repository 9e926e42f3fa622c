"""Pure vocabulary shared by every layer: replies, addresses, ids. No I/O here."""
