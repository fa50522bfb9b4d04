"""Every prober, imported once so that each registers itself in ``probes.PROBERS``.

Adding a prober is its module ``probes/NAME.py`` plus one line here. The order is the
registry's: module sections are checked in it, so errors come in a stable order.
"""
# isort: skip_file

from netprobe_exporter.probes import tcp as tcp
from netprobe_exporter.probes import http as http
from netprobe_exporter.probes import dns as dns
from netprobe_exporter.probes import icmp as icmp
from netprobe_exporter.probes import grpc as grpc
from netprobe_exporter.probes import unix as unix
from netprobe_exporter.probes import websocket as websocket
from netprobe_exporter.probes import traceroute as traceroute
from netprobe_exporter.probes import PROBERS

__all__ = ["PROBERS"]
