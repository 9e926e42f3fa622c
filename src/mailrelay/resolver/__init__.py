"""DNS behind a small interface: the real one on dnspython, test servers on loopback."""
