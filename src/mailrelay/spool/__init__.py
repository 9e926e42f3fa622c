"""The durable queue: the enqueue transaction (group commit) and, later, scheduling."""
