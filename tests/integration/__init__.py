"""Integration tier: the real reactor on real loopback sockets, in-process."""
