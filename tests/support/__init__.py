"""Helpers shared by every test tier; test modules import from here, never from each other.

procutil: the exporter (and other binaries) as subprocesses, HTTP, waits. servers: loopback
servers in threads (TCP, HTTP, TLS) and test certificates. loopback: in-process twisted.names
servers and timer helpers on the real reactor. blackbox: the real blackbox_exporter and the
differential comparison. netns: network namespaces (root). metrics: the one exposition parser.
dns_zone_server: a zone server run as a subprocess.
"""
