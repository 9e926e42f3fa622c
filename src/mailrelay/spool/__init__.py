"""The durable queue: the enqueue transaction (group commit), leases, the retry schedule,
nodes and their heartbeats, and the read side for `mailrelay queue`."""
