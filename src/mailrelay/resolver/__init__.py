"""DNS behind small interfaces (`base`: asked from the event loop or from a worker thread), the
real resolvers on dnspython (`dnspython`); tests give their own or ask servers on loopback."""
