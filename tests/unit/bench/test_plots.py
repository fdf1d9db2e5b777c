"""The e2e plots' layout decisions: which rate the all-systems panel compares, a colour per kind of
system, one throughput panel per (events, workers) group, and PNGs written for a 12-system run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workers.bench import plots
from workers.bench.e2e import Run, throughput_panels

PTS = [(1.0, 0.5), (2.0, 1.0)]


def test_common_rate_is_the_rate_most_systems_were_measured_at_lowest_first() -> None:
    systems = {"a x1": {"1000": PTS, "5000": PTS}, "b x1": {"1000": PTS, "5000": PTS}, "c x1": {"900": PTS}}
    assert plots.common_rate(systems) == "1000"
    assert plots.common_rate({"a x1": {"1000": PTS}}) is None  # one system: nothing to compare
    assert plots.common_rate({"a x1": {"1000": PTS}, "b x1": {"900": PTS}}) is None
    assert plots.common_rate({"a x1": {"1000": [], "5000": PTS}, "b x1": {"1000": PTS, "5000": PTS}}) == "5000"


def test_each_kind_of_system_keeps_one_colour() -> None:
    assert plots.kind_color("passthrough (fraud-scorer events) x2") == plots.KIND_COLORS["passthrough"]
    assert plots.kind_color("streamscore:ato-scorer x1") == plots.kind_color("streamscore:fraud-scorer x2")
    assert len({plots.kind_color(k) for k in ("passthrough x1", "streamscore:x x1", "faust x1", "quix x1")}) == 4


def _run(name: str, topology: str, workers: int) -> Run:
    return Run(entry={"name": name, "topology": topology, "workers": workers, "max_events_per_s": 1000.0},
               offered=[(1000.0, 990.0)], cdf={"1000": plots.cdf_points([1.0, 2.0, 3.0])})


def _label(e: dict[str, Any]) -> str:
    return f"{e['name']} x{e['workers']}"


RUNS = [_run(n, t, w) for w in (1, 2) for n, t in (("passthrough", "fraud"), ("streamscore:fraud", "fraud"),
                                                   ("faust", "fraud"), ("quix", "fraud"),
                                                   ("passthrough", "ato"), ("streamscore:ato", "ato"))]


def test_throughput_panels_group_by_events_and_worker_count_in_run_order() -> None:
    panels = throughput_panels(RUNS, _label)
    assert list(panels) == ["fraud events, 1 worker process", "ato events, 1 worker process",
                            "fraud events, 2 worker processes", "ato events, 2 worker processes"]
    assert list(panels["fraud events, 2 worker processes"]) == [
        "passthrough x2", "streamscore:fraud x2", "faust x2", "quix x2"]


def test_a_twelve_system_run_writes_both_pngs(tmp_path: Path) -> None:
    title = "streamscore bench e2e — " + "a long machine description; " * 8
    cdf = plots.latency_cdf(tmp_path / "cdf.png", {_label(r.entry) + r.entry["topology"]: r.cdf for r in RUNS}, title)
    tp = plots.throughput(tmp_path / "tp.png", throughput_panels(RUNS, _label), title)
    for png in (cdf, tp):
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 1000
