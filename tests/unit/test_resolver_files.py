"""The resolver's file readers: the hosts file and resolv.conf (no sockets)."""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from netprobe_exporter.resolver import HostsFile, ResolveError, Resolver, read_nameservers
from tests.support.loopback import temp_path, write_file
from tests.support.reactor import reactor

HOSTS = """\
# a comment line
127.0.0.1   localhost
::1         localhost ip6-localhost   # trailing comment
127.0.1.1   alpha alpha.example.org   ALIAS-A
192.0.2.10  dual
2001:db8::10 dual
2001:db8::20 only6
fe80::1%lo  linklocal
not-an-ip   broken
192.0.2.30                           # an address without names
   # indented comment 192.0.2.99 commented
"""


class HostsFileTests(TestCase):
    def setUp(self) -> None:
        self.path = temp_path(self)
        write_file(self.path, HOSTS)
        self.hosts = HostsFile(str(self.path))

    def test_multiple_names_per_line(self) -> None:
        for name in ("alpha", "alpha.example.org", "alias-a"):
            self.assertEqual(self.hosts.lookup(name), ["127.0.1.1"], name)

    def test_case_insensitive_and_trailing_dot(self) -> None:
        self.assertEqual(self.hosts.lookup("ALPHA"), ["127.0.1.1"])
        self.assertEqual(self.hosts.lookup("alpha.example.org."), ["127.0.1.1"])

    def test_ipv6_and_dual_entries(self) -> None:
        self.assertEqual(self.hosts.lookup("localhost"), ["127.0.0.1", "::1"])
        self.assertEqual(self.hosts.lookup("ip6-localhost"), ["::1"])
        self.assertEqual(self.hosts.lookup("dual"), ["192.0.2.10", "2001:db8::10"])
        self.assertEqual(self.hosts.lookup("only6"), ["2001:db8::20"])
        self.assertEqual(self.hosts.lookup("linklocal"), ["fe80::1"])

    def test_comments_and_garbage_ignored(self) -> None:
        self.assertEqual(self.hosts.lookup("commented"), [])
        self.assertEqual(self.hosts.lookup("comment"), [])
        self.assertEqual(self.hosts.lookup("broken"), [])
        self.assertEqual(self.hosts.lookup("192.0.2.99"), [])
        self.assertEqual(self.hosts.lookup("nosuchname"), [])

    def test_missing_file_is_empty(self) -> None:
        hosts = HostsFile(str(self.path) + ".missing")
        self.assertEqual(hosts.lookup("localhost"), [])

    def test_reread_when_mtime_changes(self) -> None:
        base = time.time() - 100
        write_file(self.path, "127.0.0.1 myhost\n", mtime=base)
        self.assertEqual(self.hosts.lookup("myhost"), ["127.0.0.1"])
        write_file(self.path, "127.0.0.9 myhost\n127.0.0.8 other\n", mtime=base + 10)
        self.assertEqual(self.hosts.lookup("myhost"), ["127.0.0.9"])
        self.assertEqual(self.hosts.lookup("other"), ["127.0.0.8"])

    def test_not_reread_while_mtime_unchanged(self) -> None:
        base = time.time() - 100
        write_file(self.path, "127.0.0.1 myhost\n", mtime=base)
        self.assertEqual(self.hosts.lookup("myhost"), ["127.0.0.1"])
        # same mtime: the cached parse is kept (proves the mtime, not every call, drives re-reads)
        write_file(self.path, "127.0.0.2 myhost\n", mtime=base)
        self.assertEqual(self.hosts.lookup("myhost"), ["127.0.0.1"])

    def test_file_appearing_later_is_read(self) -> None:
        missing = temp_path(self)
        hosts = HostsFile(str(missing))
        self.assertEqual(hosts.lookup("late"), [])
        write_file(missing, "127.0.0.7 late\n")
        self.assertEqual(hosts.lookup("late"), ["127.0.0.7"])


class ReadNameserversTests(TestCase):
    def test_parse(self) -> None:
        path = temp_path(self)
        write_file(
            path,
            "# generated\n"
            "search example.org\n"
            "nameserver 127.0.0.53\n"
            "; nameserver 192.0.2.1\n"
            "# nameserver 192.0.2.2\n"
            "nameserver\n"
            "nameserver not-an-address\n"
            "  nameserver   ::1   \n"
            "options edns0 trust-ad\n"
            "nameserver 192.0.2.53 # trailing comment\n",
        )
        self.assertEqual(
            read_nameservers(str(path)),
            [("127.0.0.53", 53), ("::1", 53), ("192.0.2.53", 53)],
        )

    def test_missing_file(self) -> None:
        self.assertEqual(read_nameservers(str(temp_path(self))), [])

    def test_no_nameserver_is_a_resolve_error(self) -> Deferred[Any]:
        """No servers given and none in resolv.conf: a ResolveError, and no socket is opened."""
        conf = temp_path(self)
        write_file(conf, "search example.org\n")
        hosts = temp_path(self)
        write_file(hosts, "")
        r = Resolver(reactor, hosts_path=str(hosts), resolv_conf=str(conf))
        d = r.resolve("name.example.org", "ip4", True, 1.0)
        return self.assertFailure(d, ResolveError)
