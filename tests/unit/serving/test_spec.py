"""The topology's `serving` section is validated data like the rest of the topology."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.topology import TopologyError, parse_topology

ROOT = Path(__file__).resolve().parents[3]
BASE = (ROOT / "topologies" / "fraud.yaml").read_text()

SERVING = """
serving:
  reload: {watch: false}
  cache: {ttl_ms: 1000, max_entries: 10}
  cascade: {model: {name: fraud_lite, version: "1"}, band: {from: 0.01, to: 0.9}}
  canary:
    model: {name: fraud_gbm, version: "3"}
    fraction: 0.1
    key: card_id
    max_p99_ms: 20
  shadow: {model: {name: fraud_mlp, version: "1"}, sample: 0.5, topic: decisions.shadow}
"""


def test_a_serving_section_loads() -> None:
    t = parse_topology(BASE + SERVING, Path("t.yaml"))
    s = t.serving
    assert not s.reload.watch and s.cache is not None and s.cache.ttl_ms == 1000
    assert s.cascade is not None and (s.cascade.band.from_, s.cascade.band.to) == (0.01, 0.9)
    assert s.canary is not None and s.canary.key == "card_id" and s.canary.window_batches == 50
    assert s.shadow is not None and s.shadow.key == "_kafka.key" and s.shadow.max_queued_batches == 16


def test_no_section_means_reload_only() -> None:
    s = parse_topology(BASE, Path("t.yaml")).serving
    assert s.reload.watch and s.cache is s.cascade is s.canary is s.shadow is None


def test_unknown_key_named_with_its_line() -> None:
    text = BASE + SERVING.replace("sample: 0.5", "sampel: 0.5")
    with pytest.raises(TopologyError) as e:
        parse_topology(text, Path("t.yaml"))
    line = (BASE + SERVING).splitlines().index("  shadow: {model: {name: fraud_mlp, version: \"1\"}, sample: 0.5, "
                                               "topic: decisions.shadow}") + 1
    assert f"t.yaml:{line}: serving.shadow.sampel: unknown key" in str(e.value)


@pytest.mark.parametrize("old, new, message", [
    ("key: card_id", "key: card_number", "serving.canary.key: 'card_number' is not an event field"),
    ("from: 0.01, to: 0.9", "from: 0.9, to: 0.01", "band.from (0.9) must not exceed band.to (0.01)"),
    ("fraction: 0.1", "fraction: 0.0", "serving.canary.fraction"),
])
def test_bad_values_are_refused(old: str, new: str, message: str) -> None:
    with pytest.raises(TopologyError) as e:
        parse_topology(BASE + SERVING.replace(old, new), Path("t.yaml"))
    assert message in str(e.value)
