"""Test support shared by the whole suite: real servers on loopback and their fixtures."""
