"""What happened to mail: the event log, `mailrelay events`, and the event webhook."""
