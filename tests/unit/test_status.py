"""The status page's data: states, failure kinds, since, flapping, filters and paging."""

from __future__ import annotations

import pytest

from netprobe_exporter import status, status_assets
from netprobe_exporter.config import Target
from netprobe_exporter.history import ProbeHistory
from netprobe_exporter.metrics import HISTORY, MetricsStore
from netprobe_exporter.probes import ProbeResult


def ok(seconds: float = 0.002) -> ProbeResult:
    return ProbeResult(True, "success", seconds, connect_duration=seconds / 2)


def bad(kind: str, detail: str = "") -> ProbeResult:
    return ProbeResult(False, kind, 0.5, detail=detail or f"it was {kind}")


def _store(*targets: Target) -> MetricsStore:
    store = MetricsStore()
    store.sync(targets)
    return store


def _view(store: MetricsStore, history: ProbeHistory | None = None) -> status.StatusView:
    return status.StatusView(store, history, lambda: "c.yml", wall=lambda: 1000.0)


def _page(view: status.StatusView, **query: object) -> dict[str, object]:
    args = {k.encode(): [str(v).encode()] for k, v in query.items()}
    return view.page(status.parse_query(args))


def _names(page: dict[str, object]) -> list[str]:
    rows = page["rows"]
    assert isinstance(rows, list)
    return [r["target"] for r in rows]


def test_order_is_down_flapping_pending_up_and_counts_every_state() -> None:
    up, down, flap, new = (Target(f"{n}.example:80", "tcp_connect", 1.0) for n in "udfp")
    store = _store(up, down, flap, new)
    for i in range(10):
        store.observe(up, ok(), 100.0 + i)
        store.observe(down, bad("timeout"), 100.0 + i)
        store.observe(flap, ok() if i % 2 else bad("refused"), 100.0 + i)
    page = _page(_view(store))
    assert _names(page) == ["d.example:80", "f.example:80", "p.example:80", "u.example:80"]
    assert page["summary"] == {"targets": 4, "down": 1, "flapping": 1, "pending": 1, "up": 1}
    rows = page["rows"]
    assert isinstance(rows, list)
    assert [r["state"] for r in rows] == ["down", "flapping", "pending", "up"]


def test_a_target_that_fails_once_is_down_then_up_not_flapping() -> None:
    t = Target("a.example:80", "tcp_connect", 1.0)
    store = _store(t)
    store.observe(t, ok(), 100.0)
    store.observe(t, bad("dns_error", "no such host"), 101.0)
    (row,) = _page(_view(store))["rows"]  # type: ignore[misc]
    assert row["state"] == "down" and row["since"] == 101.0
    assert row["last_result"] == "dns_error" and row["detail"] == "no such host"
    store.observe(t, ok(), 102.0)
    store.observe(t, ok(), 103.0)
    (row,) = _page(_view(store))["rows"]  # type: ignore[misc]
    assert row["state"] == "up" and row["since"] == 102.0  # up since the first success
    # the reason of the last failure stays while the target is up again
    assert row["last_failure"] == {"result": "dns_error", "detail": "no such host", "ts": 101.0}
    assert row["detail"] == ""


def test_each_failure_kind_is_kept_per_cell_with_its_time_and_latency() -> None:
    t = Target("a.example:80", "tcp_connect", 1.0)
    store = _store(t)
    kinds = ["timeout", "refused", "dns_error", "tls_error", "protocol_error", "unreachable"]
    for i, kind in enumerate(kinds):
        store.observe(t, bad(kind), 200.0 + i)
    store.observe(t, ok(0.0015), 210.5)
    (row,) = _page(_view(store))["rows"]  # type: ignore[misc]
    assert row["history"]["result"] == [*kinds, "success"]
    assert row["history"]["ts"] == [200, 201, 202, 203, 204, 205, 210]
    assert row["history"]["ms"][-1] == pytest.approx(1.5, abs=0.001)
    assert row["history"]["ms"][0] == pytest.approx(500.0, abs=0.01)
    assert row["ratio"] == pytest.approx(1 / 7, abs=0.001)


def test_history_keeps_the_last_results_in_order_once_the_ring_wraps() -> None:
    t = Target("a.example:80", "tcp_connect", 1.0)
    store = _store(t)
    for i in range(HISTORY + 7):
        store.observe(t, bad("timeout") if i == HISTORY + 6 else ok(), float(i))
    (row,) = _page(_view(store))["rows"]  # type: ignore[misc]
    assert len(row["history"]["ts"]) == HISTORY
    assert row["history"]["ts"][0] == 7 and row["history"]["ts"][-1] == HISTORY + 6
    assert row["history"]["result"][-1] == "timeout"
    assert row["state"] == "down"  # one change only: not flapping


def test_flapping_needs_enough_changes_among_the_kept_results() -> None:
    t = Target("a.example:80", "tcp_connect", 1.0)
    store = _store(t)
    (series,) = store.series.values()
    pattern = [ok(), bad("timeout"), ok(), bad("timeout")]  # three changes
    for i, r in enumerate(pattern):
        store.observe(t, r, float(i))
    assert status.changes(series) == 3 and status.state_of(series) == "down"
    store.observe(t, ok(), 10.0)
    assert status.changes(series) == 4 and status.state_of(series) == "flapping"
    for i in range(HISTORY):  # the changes age out of the ring: steady again
        store.observe(t, ok(), 20.0 + i)
    assert status.changes(series) == 0 and status.state_of(series) == "up"


def test_filters_by_target_module_label_and_state() -> None:
    a = Target("alpha.example:80", "tcp_connect", 1.0, (("team", "db"),))
    b = Target("beta.example:443", "http_2xx", 1.0, (("team", "web"),))
    c = Target("gamma.example:53", "dns", 1.0)
    store = _store(a, b, c)
    store.observe(a, ok(), 1.0)
    store.observe(b, bad("tls_error"), 1.0)
    view = _view(store)
    assert _names(_page(view, q="ALPHA")) == ["alpha.example:80"]
    assert _names(_page(view, module="http_2xx")) == ["beta.example:443"]
    assert _names(_page(view, label="team=web")) == ["beta.example:443"]
    assert _names(_page(view, label="team")) == ["beta.example:443", "alpha.example:80"]
    assert _names(_page(view, state="pending")) == ["gamma.example:53"]
    assert _names(_page(view, state="up", module="http_2xx")) == []
    page = _page(view, q="example", state="down")
    assert page["total"] == 1 and page["summary"]["targets"] == 3  # type: ignore[index]
    assert page["modules"] == ["dns", "http_2xx", "tcp_connect"]


def test_paging_renders_only_the_asked_page() -> None:
    targets = [Target(f"t{i:04d}.example:80", "tcp_connect", 1.0) for i in range(250)]
    store = _store(*targets)
    view = _view(store)
    first = _page(view, per_page=100)
    assert first["pages"] == 3 and first["total"] == 250
    assert _names(first)[0] == "t0000.example:80" and len(_names(first)) == 100
    third = _page(view, per_page=100, page=3)
    assert _names(third) == [f"t{i:04d}.example:80" for i in range(200, 250)]
    past = _page(view, per_page=100, page=9)  # past the end: the last page
    assert past["page"] == 3


@pytest.mark.parametrize(
    ("args", "wording"),
    [
        ({b"state": [b"sideways"]}, "state must be one of all, down, flapping, pending, up"),
        ({b"page": [b"x"]}, "page must be a whole number"),
        ({b"per_page": [b"5000"]}, "per_page must be between 1 and 500"),
        ({b"page": [b"0"]}, "page must be between 1"),
    ],
)
def test_bad_query_parameters_are_named(args: dict[bytes, list[bytes]], wording: str) -> None:
    with pytest.raises(ValueError, match=wording):
        status.parse_query(args)


def test_a_target_page_is_found_by_id_and_a_reload_keeps_ids() -> None:
    t = Target("https://u:pw@a.example/", "http_2xx", 1.0)
    u = Target("b.example:80", "tcp_connect", 1.0)
    store = _store(t, u)
    view = _view(store)
    rows = _page(view)["rows"]
    assert isinstance(rows, list)
    ids = {r["target"]: r["id"] for r in rows}
    assert "https://u:xxxxx@a.example/" in ids  # never the password
    one = view.target(ids["https://u:xxxxx@a.example/"])
    assert one is not None and one["probe_link"] is None  # the link would show it
    other = view.target(ids["b.example:80"])
    assert other is not None
    assert other["probe_link"] == "probe?target=b.example%3A80&module=tcp_connect&debug=true"
    store.sync([u])  # a reload: the kept target keeps its id, the gone one is gone
    assert view.target(ids["b.example:80"]) is not None
    assert view.target(ids["https://u:xxxxx@a.example/"]) is None


def test_banners_say_why_a_reload_or_a_target_file_was_refused() -> None:
    store = _store()
    view = _view(store)
    assert view.banners() == []
    stats = store.stats
    stats.reload_success_ts = 5.0
    stats.reload_successful = 0.0
    stats.reload_errors = ["c.yml:3: interval: 'soon' is not a duration"]
    stats.target_files_ok = 0.0
    stats.target_file_problems = ["t.yml: not a list of targets"]
    kinds = {b["kind"]: b["errors"] for b in view.banners()}
    assert kinds == {
        "reload": ["c.yml:3: interval: 'soon' is not a duration"],
        "target_files": ["t.yml: not a list of targets"],
    }
    assert _page(view)["health"]["reload_successful"] is False  # type: ignore[index]


def test_recent_probe_requests_are_listed_newest_first_with_a_shown_target() -> None:
    history = ProbeHistory(limit=3)
    history.add(1.0, "http_2xx", "https://u:pw@x.example/", False, "timeout", 1.0, "slow", "log")
    history.add(2.0, "tcp_connect", "y.example:80", True, "success", 0.01, "", "log")
    probes = _page(_view(_store(), history))["probes"]
    assert isinstance(probes, list)
    assert [(p["id"], p["target"], p["result"]) for p in probes] == [
        (1, "y.example:80", "success"),
        (0, "https://u:xxxxx@x.example/", "timeout"),
    ]


def test_the_pages_need_nothing_from_elsewhere() -> None:
    for page in (status_assets.LIST_PAGE, status_assets.TARGET_PAGE):
        assert "http://" not in page and "https://" not in page and "<script src" not in page
        assert '<link rel="stylesheet"' not in page


def test_a_page_is_built_in_steps_of_at_most_chunk_targets() -> None:
    n = status.CHUNK * 4 + 7
    store = _store(*(Target(f"t{i:05d}.example:80", "tcp_connect", 1.0) for i in range(n)))
    view = _view(store)
    steps = view.page_steps(status.Query(per_page=status.MAX_PER_PAGE))
    looked_at: list[int] = []
    for _ in range(1000):
        try:
            next(steps)
        except StopIteration as done:
            page = done.value
            break
        looked_at.append(1)
    # the order (once per reload), the walk and the rows each take one step per chunk
    assert len(looked_at) >= 2 * (n // status.CHUNK) + status.MAX_PER_PAGE // status.ROW_CHUNK
    assert page["total"] == n and len(page["rows"]) == status.MAX_PER_PAGE
    again = view.page_steps(status.Query())
    count = sum(1 for _ in again)  # the order is kept: only the walk and the rows are left
    assert count < len(looked_at)


def test_an_every_address_target_page_lists_each_address_state() -> None:
    t = Target("svc.example:80", "tcp_every", 1.0)
    store = _store(t)
    result = bad("timeout", "2 of 3 addresses failed")
    result.addresses = [("192.0.2.1", ok()), ("192.0.2.2", bad("timeout")), ("2001:db8::1", ok())]
    store.observe(t, result, 1000.0)
    view = _view(store)
    rows = _page(view)["rows"]
    assert isinstance(rows, list) and [r["target"] for r in rows] == ["svc.example:80"]
    one = view.target(rows[0]["id"])
    assert one is not None
    assert [(a["ip"], a["state"], a["last_result"]) for a in one["addresses"]] == [
        ("192.0.2.1", "up", "success"),
        ("192.0.2.2", "down", "timeout"),
        ("2001:db8::1", "up", "success"),
    ]
    plain = _store(Target("b.example:80", "tcp_connect", 1.0))
    other = _view(plain).target(_page(_view(plain))["rows"][0]["id"])  # type: ignore[index]
    assert other is not None and other["addresses"] == []
