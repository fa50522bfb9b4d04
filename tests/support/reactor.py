"""The global reactor, typed: tests use the one Twisted installed (epoll on Linux), whose class
provides every reactor interface they call (TCP, UDP, time, FD set, threads)."""

from __future__ import annotations

from typing import cast

from twisted.internet import reactor as _reactor
from twisted.internet.epollreactor import EPollReactor

reactor = cast(EPollReactor, _reactor)
