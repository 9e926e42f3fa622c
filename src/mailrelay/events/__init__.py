"""What happened to mail, read back: `mailrelay events` queries, the event webhook's payloads,
signing and outbox, and the HTTP poster both webhooks use. Events are written by
`mailrelay.store.eventlog`, from every layer."""
