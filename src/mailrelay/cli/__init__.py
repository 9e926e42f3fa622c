"""Command line: `mailrelay serve | account | queue`, built on argparse."""
