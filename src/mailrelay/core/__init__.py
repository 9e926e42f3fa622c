"""Pure vocabulary shared by every layer: replies, addresses and domain names, recipient
statuses and event types, header helpers, ids. No I/O here."""
