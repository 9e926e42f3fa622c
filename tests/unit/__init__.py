"""Pure tests: no database, no sockets, no subprocesses."""
