"""The e2e report: CPU steal from /proc/stat readings, and the table naming it per system."""

from __future__ import annotations

from typing import Any

from workers.bench import report


def test_steal_pct_is_the_stolen_share_of_all_cpu_time_between_two_readings() -> None:
    assert report.steal_pct((100, 10_000), (150, 10_500)) == 10.0
    assert report.steal_pct(None, (1, 2)) is None
    assert report.steal_pct((5, 100), (5, 100)) is None  # no time passed: no share


def test_cpu_ticks_reads_proc_stat_here() -> None:
    ticks = report.cpu_ticks()
    assert ticks is not None and 0 <= ticks[0] <= ticks[1]


def _system(name: str, steal: float | None) -> dict[str, Any]:
    return {"name": name, "topology": "fraud-scorer", "workers": 1, "max_events_per_s": 1000.0,
            "latency_ms": {"1000": {"p50": 3.0, "p95": 5.0, "p99": 9.0, "p999": 12.0}},
            "cpu_us_per_event": 10.0, "peak_rss_mb": 50.0, "cpu_steal_pct": steal}


def test_table_names_the_steal_of_each_system_and_the_run() -> None:
    doc = {"machine": report.machine((0.5, 0, 0), (2.0, 0, 0), 12.5),
           "run": {"rates": [1000], "latency": "broker -> broker"},
           "systems": [_system("passthrough", 12.5), _system("streamscore:fraud-scorer", None)]}
    text = report.table(doc)
    assert "CPU steal 12.5%" in doc["machine"]
    lines = text.splitlines()
    assert "steal%" in lines[3]
    row = next(x for x in lines if x.startswith("passthrough"))
    assert " 12.5 " in row and "3/9" in row
    row = next(x for x in lines if x.startswith("streamscore:"))
    assert "  -  " in row
