"""Unit tier: in-memory transports and clocks only; no sockets, subprocesses or root."""
