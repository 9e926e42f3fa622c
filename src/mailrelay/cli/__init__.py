"""Command line: `mailrelay serve | account | domain | queue | inbox | events | node ...`,
built on argparse. Thin: each command calls the services below (through `mailrelay.app` or
the packages themselves) and prints tables."""
