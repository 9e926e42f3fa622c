"""The HTTP API: SendGrid's v3 surface (an application moves to us by changing the host name),
thin over the same services as SMTP. `mailrelay serve` runs it in a process of its own."""
