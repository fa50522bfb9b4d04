"""Command line: Prometheus-style flags; exits 0 (clean stop), 1 (bad flags/config), 2 (listen)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

import twisted
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads
from twisted.logger import Logger
from twisted.python.failure import Failure

from netprobe_exporter import __version__, logs, python_version
from netprobe_exporter.config import ConfigError

if TYPE_CHECKING:
    from netprobe_exporter.app import App

log = Logger()

EXIT_OK, EXIT_CONFIG, EXIT_LISTEN = 0, 1, 2
#: more probe workers than this is surely a typo (each is a Python process of ~30 MB)
MAX_WORKERS = 256


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message}\n")


def _workers(text: str) -> int:
    if not text.isdigit() or int(text) > MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of workers from 0 to "
                                         f"{MAX_WORKERS}")  # fmt: skip
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="netprobe-exporter",
        description="Probe network targets continuously and on demand; expose the results "
        "to Prometheus.",
        allow_abbrev=False,
    )
    p.add_argument(
        "--config.file",
        dest="config_file",
        metavar="PATH",
        help="YAML config; without it an embedded default probes the exporter itself",
    )
    p.add_argument(
        "--config.check",
        dest="config_check",
        action="store_true",
        help="validate the config and exit: 0 valid, 1 invalid",
    )
    p.add_argument(
        "--web.listen-address",
        dest="listen",
        action="append",
        metavar="HOST:PORT",
        help="address to serve on (repeatable; default :9716)",
    )
    p.add_argument(
        "--target",
        dest="targets",
        action="append",
        default=[],
        metavar="ADDR",
        help="probe ADDR continuously with the default module (repeatable)",
    )
    p.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="PATH",
        help="TLS and basic auth (Prometheus exporter-toolkit web-config.yml format)",
    )
    p.add_argument(
        "--shard",
        default="0/1",
        metavar="INDEX/COUNT",
        help="probe only this replica's share of the continuous targets (default 0/1: all)",
    )
    p.add_argument(
        "--probe.workers",
        dest="workers",
        type=_workers,
        default=os.cpu_count() or 1,
        metavar="N",
        help="probe worker processes (default: the number of CPUs; 0: probe in this process)",
    )
    p.add_argument(
        "--timeout-offset",
        dest="timeout_offset",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="subtracted from Prometheus' scrape timeout for /probe (default 0.5)",
    )
    p.add_argument(
        "--config.enable-auto-reload",
        dest="auto_reload",
        action="store_true",
        help="reload the config file when its content changes, looked at every "
        "--config.auto-reload-interval (as blackbox 0.28)",
    )
    p.add_argument(
        "--config.auto-reload-interval",
        dest="auto_reload_interval",
        type=_auto_reload_interval,
        default=30.0,
        metavar="SECONDS",
        help="how often --config.enable-auto-reload looks at the config file (default 30; "
        "a number of seconds, or a duration such as 1m)",
    )
    p.add_argument(
        "--history.limit",
        dest="history_limit",
        type=_history_limit,
        default=100,
        metavar="N",
        help="/probe requests kept for the status page and /logs, plus as many aged-out "
        "failures (default 100, as blackbox; 0 keeps none)",
    )
    p.add_argument(
        "--log.level", dest="log_level", default="info", choices=["debug", "info", "warn", "error"]
    )
    p.add_argument("--log.format", dest="log_format", default="logfmt", choices=["logfmt", "json"])
    p.add_argument("--version", action="store_true", help="print version and exit")
    return p  # fmt: skip


def _auto_reload_interval(text: str) -> float:
    """Seconds, as blackbox takes them (``30``), or a duration (``30s``, ``1m``)."""
    from netprobe_exporter.durations import parse_duration

    try:
        seconds = float(text) if text.isdigit() else parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds or a duration such as 30s"
        ) from None
    if seconds < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1 second")
    return seconds


def _history_limit(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of entries")
    return int(text)


def version_text() -> str:
    py = python_version()
    return f"netprobe-exporter, version {__version__} (python {py}, twisted {twisted.__version__})"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.version:
        print(version_text())
        return EXIT_OK
    listen: list[str] = args.listen or [":9716"]

    from netprobe_exporter.app import App, process_registry, split_listen_address
    from netprobe_exporter.sources import parse_shard

    try:
        shard = parse_shard(args.shard)
    except ValueError as exc:
        print(f"netprobe-exporter: --shard: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    for address in listen:
        try:
            split_listen_address(address)
        except ValueError as exc:
            print(f"netprobe-exporter: --web.listen-address: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    if args.config_check:  # after the flags above: a check passes only what a start would
        return _check(args.config_file, args.targets, args.web_config_file)

    # Only now import the reactor: the epoll reactor is Twisted's default on Linux.
    from twisted.internet import reactor as _reactor

    from netprobe_exporter.webconfig import load_web_config

    reactor = IReactorCore(_reactor)
    logs.setup(args.log_level, args.log_format)
    # Threads (config parsing) must not hold the GIL for long while probes are timed.
    sys.setswitchinterval(0.0005)
    try:
        web_config = load_web_config(args.web_config_file) if args.web_config_file else None
    except ConfigError as exc:
        for line in exc.errors:
            log.error("invalid web config", error=line)
        return EXIT_CONFIG
    app = App(
        reactor,
        config_file=args.config_file,
        extra_targets=args.targets,
        metrics_registry=process_registry(),
        timeout_offset=args.timeout_offset,
        shard=shard,
        web_config_file=args.web_config_file,
        web_config=web_config,
        listen=listen,
        workers=args.workers,
        log_level=args.log_level,
    )
    app.web.history.limit = args.history_limit
    if args.auto_reload:
        app.manager.auto_reload_interval = args.auto_reload_interval
    try:
        if args.config_file is not None or args.targets:
            # before listening; the embedded default needs the bound port, so it waits
            app.manager.initial = app.manager.read_config()
    except ConfigError as exc:
        for line in exc.errors:
            log.error("invalid config", error=line)
        return EXIT_CONFIG
    outcome = _start(reactor, app)
    if outcome and outcome[0] != EXIT_OK:
        return outcome[0]
    from_threads = IReactorFromThreads(reactor)

    def on_hup(signum: int, frame: object) -> None:
        from_threads.callFromThread(_reload_from_signal, app)

    signal.signal(signal.SIGHUP, on_hup)
    reactor.addSystemEventTrigger("before", "shutdown", app.stopService)
    reactor.run()
    if outcome and outcome[0] != EXIT_OK:
        return outcome[0]
    log.info("stopped")
    return EXIT_OK


def _start(reactor: IReactorCore, app: App) -> list[int]:
    """Open the listeners, then start the services; the list gets the outcome's exit code.

    The endpoints in use (TCP, TLS) listen at once, so this all happens before the reactor
    runs, as a start always has: a target's first probe is due within a second of listening.
    """
    app.privilegedStartService()
    assert app.web.listening is not None
    outcome: list[int] = []

    def listened(_: None) -> None:
        app.startService()
        log.info("started", version=__version__)
        outcome.append(EXIT_OK)

    def cannot(reason: Failure) -> None:
        log.error("cannot listen", error=str(reason.value))
        outcome.append(EXIT_LISTEN)
        if reactor.running:
            reactor.stop()

    def crashed(reason: Failure) -> None:
        log.failure("start failed", reason)
        outcome.append(EXIT_CONFIG)
        if reactor.running:
            reactor.stop()

    app.web.listening.addCallbacks(listened, cannot).addErrback(crashed)
    return outcome


def _reload_from_signal(app: App) -> None:
    """Reload the web config and the config, each on its own: one failing skips nothing."""
    log.info("reloading config", reason="SIGHUP")
    try:
        app.web.reload_web_config()
    finally:
        app.manager.reload().addErrback(lambda _: None)  # already logged


def _check(config_file: str | None, targets: list[str], web_config_file: str | None) -> int:
    """``--config.check``: every line printed agrees with the exit code, so no "OK" is
    printed beside an error elsewhere; errors go to stderr, a clean check's summary to stdout."""
    bad: list[str] = []
    if web_config_file is not None and not _check_web(web_config_file):
        bad.append(web_config_file)
    summary = _check_config(config_file, targets)
    if summary is None:
        bad.append(config_file or "the config")
    if bad:
        print(f"check failed: errors in {', '.join(bad)}", file=sys.stderr)
        return EXIT_CONFIG
    if web_config_file is not None:
        print(f"{web_config_file}: OK")
    print(summary)
    return EXIT_OK


def _check_config(config_file: str | None, targets: list[str]) -> str | None:
    """Check the config and its target files: their summary, or None once errors are printed."""
    from netprobe_exporter.config import (
        Config,
        load_config,
        series_total,
        with_extra_targets,
    )
    from netprobe_exporter.sources import static_source
    from netprobe_exporter.targetfiles import file_targets, scan

    parsed: Config | None = None
    try:
        parsed = load_config(config_file) if config_file else Config()
        config = with_extra_targets(parsed, targets)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        parsed = exc.partial or parsed
        if parsed is not None:  # the target files' errors too, in the same run
            for line in scan(parsed, {}).errors:
                print(line, file=sys.stderr)
        return None

    files = scan(config, {})
    for line in files.errors:
        print(line, file=sys.stderr)
    every = static_source(config, file_targets(files)).targets()
    total, series = len(every), series_total(every, config.modules)
    too_many = config.limits.too_many_targets(total) or config.limits.too_many_series(series)
    if too_many is not None:
        print(f"target_files: {too_many}", file=sys.stderr)
        return None
    if files.errors:
        return None
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    from_files = f", {len(files.files)} target files" if config.target_files else ""
    return (
        f"{config.source}: OK ({len(config.modules)} modules, {total} targets{from_files}, "
        f"{series} series of limits.sample_limit {config.limits.sample_limit})"
    )


def _check_web(path: str) -> bool:
    """The web config as a start reads it, its TLS certificate and key loaded too."""
    from netprobe_exporter.webconfig import ServerContext, load_web_config

    try:
        web = load_web_config(path)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return False
    if web.tls is not None:
        try:
            ServerContext(web.tls)
        except Exception as exc:  # OpenSSL's errors for a bad certificate, key or CA file
            print(f"{path}: tls_server_config: {exc}", file=sys.stderr)
            return False
    return True
