"""``target_files``: targets from Prometheus file_sd files, re-read when they change.

A file is a list of groups, ``{targets: [...], labels: {...}}``, in JSON or YAML, exactly as
Prometheus' ``file_sd_configs`` reads it, so one file can feed both. Each entry of the config's
``target_files`` gives its files' targets a module, interval, labels and buckets; a group's
``labels`` come on top (labels starting with ``__`` are Prometheus' meta labels and ignored).

Files are watched by polling: a ``stat`` per file every ``refresh_interval``; only a file whose
inode, mtime or size changed is read again, and only once it has settled: its mtime is at least
``SETTLE`` old, or it shows the same inode, mtime and size at two looks in a row (a reload is a
look too). Until then the file keeps its targets, so a file truncated and rewritten in place is
never read in between, empty or half written. A file that fails to read or validate keeps the
targets it had (as Prometheus keeps a file's last good state) and its error is reported, naming
file, line and key; a file that is gone takes its targets with it. Scanning blocks (glob, stat,
read, parse), so it runs off the reactor thread.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

import yaml

from netprobe_exporter.config import (
    Config,
    ConfigError,
    Limits,
    Target,
    TargetFiles,
    check_node_count,
    compose,
    merged_labels,
    native_fields,
    read_file,
    target_address,
    target_address_error,
    target_series,
)
from netprobe_exporter.yamlcheck import Checker, release

#: (inode, mtime in ns, size): a file whose stamp is unchanged is not read again
Stamp = tuple[int, int, int]

#: seconds a changed file's mtime must lie in the past before it is read at the first look;
#: a writer that truncates and rewrites a file in place has this long to finish
SETTLE = 1.0


@dataclass(frozen=True, slots=True)
class FileState:
    stamp: Stamp
    #: the config entry the file was read under: its targets carry that entry's settings
    spec: TargetFiles
    targets: tuple[Target, ...]
    #: why the last read failed (the targets are then those of the last good read), or None
    error: str | None = None
    #: the stamp seen at the last look when it differed from ``stamp`` and was too fresh to read
    pending: Stamp | None = None


#: path -> state, for every file the globs matched at the last scan
Files = dict[str, FileState]


@dataclass(frozen=True, slots=True)
class Scan:
    files: Files
    #: errors of the files read in this scan (unchanged files are not read again)
    errors: tuple[str, ...] = ()
    changed: bool = False

    @property
    def healthy(self) -> bool:
        return all(state.error is None for state in self.files.values())


def _stamp(path: str) -> Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _settled(stamp: Stamp, old: FileState, now: float) -> bool:
    """Whether a changed file may be read: old enough, or unchanged since the last look.

    The second rule covers a clock that is off (an mtime in the future never ages).
    """
    return stamp == old.stamp or stamp == old.pending or now - stamp[1] / 1e9 >= SETTLE


def scan(
    config: Config,
    previous: Mapping[str, FileState],
    force: bool = False,
    now: float | None = None,
) -> Scan:
    """Glob every entry's patterns, re-read what changed and settled (everything if ``force``).

    A file that fails keeps the targets of its last good read under the same entry; one that
    changed but has not settled (see ``SETTLE``) keeps them until a later look. ``now`` is the
    wall-clock time the mtimes are compared with. Blocks (glob, stat, read, parse), so it is
    not for the reactor thread.
    """
    now = time.time() if now is None else now
    files: Files = {}
    errors: list[str] = []
    changed = False
    for spec in config.target_files:
        for pattern in spec.files:
            for path in sorted(glob.glob(pattern)):
                if path in files:
                    continue  # matched by an earlier pattern: its first entry wins
                stamp = _stamp(path)
                if stamp is None:
                    continue  # vanished between glob and stat
                old = previous.get(path)
                if old is not None and old.spec != spec:
                    old = None  # the entry changed: what it read before does not apply
                if old is not None and old.stamp == stamp and not force:
                    files[path] = old
                    continue
                if old is not None and not _settled(stamp, old, now):
                    files[path] = dataclasses.replace(old, pending=stamp)  # look again later
                    continue
                changed = True
                try:
                    files[path] = FileState(stamp, spec, read_target_file(path, spec, config))
                except ConfigError as exc:
                    errors.extend(exc.errors)
                    kept = old.targets if old is not None else ()
                    files[path] = FileState(stamp, spec, kept, exc.errors[0])
    if set(files) != set(previous):
        changed = True
    return Scan(files, tuple(errors), changed)


def file_targets(scan: Scan) -> list[Target]:
    """Every file's targets, in path order; a target listed twice is kept once (the first)."""
    out: list[Target] = []
    seen: set[tuple[str, str]] = set()
    for path in sorted(scan.files):
        for target in scan.files[path].targets:
            if target.key not in seen:
                seen.add(target.key)
                out.append(target)
    return out


def read_target_file(path: str, spec: TargetFiles, config: Config) -> tuple[Target, ...]:
    """Read and validate one file_sd file; raise ConfigError naming file, line and key."""
    root = compose(read_file(path), path, "YAML or JSON")
    if root is None:
        return ()  # an empty file is an empty list of groups
    try:
        return _read_groups(root, path, spec, config)
    finally:
        release(root)


def _read_groups(
    root: yaml.Node, path: str, spec: TargetFiles, config: Config
) -> tuple[Target, ...]:
    check_node_count(root, path)
    limits = config.limits
    c = Checker(path)
    module = config.modules[spec.module]
    # every target of the file has the entry's buckets: one series estimate for them all
    per_target = target_series(len(spec.buckets), module)
    most = min(limits.max_targets, limits.sample_limit // per_target)
    out: list[Target] = []
    for i, group in enumerate(c.sequence(root, "") or []):
        where = f"[{i}]"
        m = c.mapping(group, where, {"targets": None, "labels": None})
        if m is None:
            continue
        frozen = spec.labels
        if "labels" in m:
            merged = merged_labels(
                c, m["labels"], f"{where}.labels", spec.labels, limits, skip_meta=True
            )
            if merged is None:
                continue
            frozen = merged
        if "targets" not in m:
            c.error(group, f"{where}.targets", "missing")
            continue
        for j, tnode in enumerate(c.sequence(m["targets"], f"{where}.targets") or []):
            address = target_address(c, tnode, f"{where}.targets[{j}]", limits)
            if address is None:
                continue
            problem = target_address_error(address, module, config.modules)
            if problem is not None:
                c.error(tnode, f"{where}.targets[{j}]", problem)
                continue
            out.append(
                Target(
                    address,
                    spec.module,
                    spec.interval,
                    frozen,
                    spec.buckets,
                    **native_fields(spec),
                )
            )
            if len(out) > most:  # aliases can repeat a list without end: stop counting here
                raise ConfigError([_over(path, len(out), per_target, limits)])
    if c.errors:
        raise ConfigError(c.errors)
    return tuple(out)


def _over(path: str, count: int, per_target: int, limits: Limits) -> str:
    """Which limit a file's ``count`` targets (so far) pass."""
    if count > limits.max_targets:
        return f"{path}: over limits.max_targets ({limits.max_targets}) targets"
    return f"{path}: {limits.too_many_series(count * per_target)}"
