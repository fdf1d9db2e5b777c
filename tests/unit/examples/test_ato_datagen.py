from __future__ import annotations

import importlib.util
import ipaddress
import shutil
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from examples.ato import datagen

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime(2025, 5, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def small() -> datagen.World:
    # The default world's density (about 0.67 logins per user and day), 1/8 of its size.
    return datagen.generate(3, n_users=600, n_ips=1500, n_logins=24_000)


@pytest.fixture(scope="module")
def default_world() -> datagen.World:
    # The world training and setup use; generating it takes about a second.
    return datagen.generate(7)


def test_same_seed_same_world(small: datagen.World) -> None:
    again = datagen.generate(3, n_users=600, n_ips=1500, n_logins=24_000)
    pd.testing.assert_frame_equal(small.users, again.users)
    pd.testing.assert_frame_equal(small.ips, again.ips)
    pd.testing.assert_frame_equal(small.logins, again.logins)


def test_other_seed_other_world(small: datagen.World) -> None:
    other = datagen.generate(4, n_users=600, n_ips=1500, n_logins=24_000)
    assert not small.users["usual_login_hour"].equals(other.users["usual_login_hour"])
    assert not small.logins["event_time_ms"].equals(other.logins["event_time_ms"])


def test_entities_do_not_depend_on_login_count(small: datagen.World) -> None:
    more = datagen.generate(3, n_users=600, n_ips=1500, n_logins=30_000)
    cols = [c for c in small.users.columns if c != "logins_per_day"]
    pd.testing.assert_frame_equal(small.users[cols], more.users[cols])
    pd.testing.assert_frame_equal(small.ips, more.ips)


def test_shapes_ids_and_domains(small: datagen.World) -> None:
    lg = small.logins
    assert len(lg) == 24_000
    assert list(lg.columns) == [*datagen.WIRE_COLUMNS, "pattern", "is_takeover", *datagen.VELOCITY_COLUMNS]
    assert lg["event_time_ms"].is_monotonic_increasing
    assert lg["event_time_ms"].min() >= datagen.WORLD_EPOCH_MS and lg["event_time_ms"].max() < small.end_ms
    assert lg["event_id"].is_unique and lg["event_id"].str.fullmatch(r"l[0-9a-f]{15}").all()
    assert set(lg["user_id"]) <= set(small.users["user_id"])
    assert set(lg["ip"]) <= set(small.ips["ip"])
    assert lg["device.id"].str.fullmatch(r"d[0-9a-f]{12}").all()
    assert lg["device.os"].isin(datagen.OSES).all() and lg["login.method"].isin(datagen.METHODS).all()
    assert lg["geo.country"].isin(datagen.COUNTRIES).all() and lg["pattern"].isin(datagen.PATTERNS).all()
    assert lg["login.success"].dtype == bool and lg["is_takeover"].dtype == bool
    assert lg["login.failed_attempts"].dtype == np.int64 and (lg["login.failed_attempts"] >= 0).all()
    ua = lg["user_agent"]
    assert ua.map(lambda v: v is None or isinstance(v, str)).all() and 0.01 < ua.isna().mean() < 0.2
    assert small.ips["ip"].is_unique and small.users["user_id"].is_unique
    for addr in small.ips["ip"].iloc[:200]:
        assert ipaddress.IPv4Address(addr).is_global
    prof = small.users
    assert ((prof["usual_login_hour"] >= 0) & (prof["usual_login_hour"] < 24)).all()
    assert ((small.ips["abuse_score"] >= 0) & (small.ips["abuse_score"] <= 1)).all()
    # The world's country is the IP's country (one geolocation per address).
    country_of = small.ips.set_index("ip")["country"]
    assert (lg["geo.country"].to_numpy() == country_of.loc[lg["ip"]].to_numpy()).all()


def test_each_users_times_strictly_increase(small: datagen.World) -> None:
    lg = small.logins.sort_values(["user_id", "event_time_ms"], kind="stable")
    same_user = lg["user_id"].to_numpy()[1:] == lg["user_id"].to_numpy()[:-1]
    assert (np.diff(lg["event_time_ms"].to_numpy())[same_user] > 0).all()


def test_strictly_increasing_per_user_nudges_only_collisions() -> None:
    user = np.array([0, 1, 0, 0, 1, 0], dtype=np.int64)
    t = np.array([5, 5, 5, 6, 9, 100], dtype=np.int64)
    assert datagen.strictly_increasing_per_user(user, t).tolist() == [5, 5, 6, 7, 9, 100]


def test_failed_attempts_are_failed_logins_just_before(small: datagen.World) -> None:
    # Session tries are seconds to minutes apart, so every earlier try of the session lies in
    # the last hour: the wire field can never exceed the velocity count.
    lg = small.logins
    assert (lg["login.failed_attempts"] <= lg["failed_logins_1h"]).all()
    assert (lg["login.failed_attempts"] > 0).mean() > 0.02


def test_velocity_matches_brute_force(small: datagen.World) -> None:
    lg = small.logins
    windows = {"10m": datagen.WINDOW_10M_MS, "1h": datagen.WINDOW_1H_MS, "1d": datagen.WINDOW_1D_MS}
    checked = 0
    for _, g in lg.groupby("user_id", sort=False):
        t = g["event_time_ms"].to_numpy()
        failed = ~g["login.success"].to_numpy()
        ip, dev = g["ip"].to_numpy(), g["device.id"].to_numpy()
        for k in range(len(g)):  # rows are in arrival (= time) order; the row itself excluded
            earlier = np.arange(len(g)) < k
            win = {name: earlier & (t >= t[k] - w) & (t <= t[k]) for name, w in windows.items()}
            got = g.iloc[k]
            assert got["logins_10m"] == win["10m"].sum()
            assert got["failed_logins_1h"] == (win["1h"] & failed).sum()
            assert got["distinct_ips_1d"] == len(set(ip[win["1d"]]))
            assert got["distinct_devices_1d"] == len(set(dev[win["1d"]]))
            checked += 1
    assert checked == len(lg)
    assert (lg["logins_10m"] > 0).any() and (lg["distinct_devices_1d"] > 1).any()


def test_velocity_at_matches_brute_force(small: datagen.World) -> None:
    lg = small.logins
    targeted = lg.loc[lg["pattern"] == "targeted", "event_time_ms"]
    for as_of in (small.end_ms, int(targeted.iloc[len(targeted) // 2]) + 1):
        vel = datagen.velocity_at(small, as_of).set_index("user_id")
        t = lg["event_time_ms"]
        day = lg[(t >= as_of - datagen.WINDOW_1D_MS) & (t <= as_of)]
        hour = lg[(t >= as_of - datagen.WINDOW_1H_MS) & (t <= as_of)]
        ten = lg[(t >= as_of - datagen.WINDOW_10M_MS) & (t <= as_of)]
        assert vel["logins_10m"].sum() == len(ten)
        assert vel["failed_logins_1h"].sum() == (~hour["login.success"]).sum()
        ips = day.groupby("user_id")["ip"].nunique().reindex(vel.index, fill_value=0)
        devs = day.groupby("user_id")["device.id"].nunique().reindex(vel.index, fill_value=0)
        assert (vel["distinct_ips_1d"] == ips).all() and (vel["distinct_devices_1d"] == devs).all()


def test_takeover_rate_and_attacks(default_world: datagen.World) -> None:
    lg = default_world.logins
    assert 0.01 < lg["is_takeover"].mean() < 0.03
    by = lg.groupby("pattern")["is_takeover"].mean()
    assert by["stuffing"] > 20 * by["ordinary"] and by["targeted"] > 20 * by["ordinary"]
    stuffing = lg[lg["pattern"] == "stuffing"]
    assert stuffing["login.success"].mean() < 0.15  # mostly failed, a few successes
    per_ip = stuffing.groupby("ip")["user_id"].nunique()
    assert per_ip.max() >= 30  # one address, many accounts
    targeted = lg[lg["pattern"] == "targeted"]
    won = targeted[targeted["login.success"] & (targeted["login.failed_attempts"] > 0)]
    assert len(won) > 100 and (won["failed_logins_1h"] >= won["login.failed_attempts"]).all()


def test_each_observable_moves_the_rate(default_world: datagen.World) -> None:
    lg = default_world.logins
    obs = datagen.observables(lg, default_world.users, default_world.ips)
    y = lg["is_takeover"].to_numpy()
    # Attack traffic carries the first group; the second is diluted by stuffing, whose victims
    # show no velocity of their own, and by busy innocent users.
    strong = {
        "new_device": obs["new_device"],
        "foreign": obs["foreign"],
        "datacenter": obs["is_datacenter"],
        "tor": obs["is_tor"],
        "abusive_ip": obs["abuse_score"] > 0.3,
        "odd_hour": obs["hour_distance"] > 6,
        "failed": obs["failed"],
    }
    mild = {
        "failed_1h": obs["failed_logins_1h"] > 0,
        "many_ips": obs["distinct_ips_1d"] > 1,
        "many_devices": obs["distinct_devices_1d"] > 1,
        "no_mfa": obs["no_mfa"],
        "past_compromises": obs["past_compromises"] > 0,
        "failed_attempts": obs["failed_attempts"] > 0,
    }
    for factor, flags in ((5.0, strong), (1.5, mild)):
        for name, series in flags.items():
            flag = series.to_numpy(bool)
            assert y[flag].mean() > factor * y[~flag].mean(), name
    passkey = lg["login.method"].to_numpy() == "passkey"
    assert y[passkey].mean() < 0.1 * y[~passkey].mean()


def _model_frame(world: datagen.World) -> pd.DataFrame:
    """Raw event columns plus the joined profile, reputation and velocity values."""
    lg = world.logins
    users = world.users.set_index("user_id").loc[lg["user_id"]].reset_index(drop=True)
    ips = world.ips.set_index("ip").loc[lg["ip"]].reset_index(drop=True)
    hour = (lg["event_time_ms"] - datagen.WORLD_EPOCH_MS) % datagen.DAY_MS / datagen.HOUR_MS
    return pd.DataFrame(
        {
            "hour": hour,
            "usual_login_hour": users["usual_login_hour"],
            "new_device": lg["device.id"].to_numpy() != users["primary_device"].to_numpy(),
            "foreign": lg["geo.country"].to_numpy() != users["home_country"].to_numpy(),
            "os": lg["device.os"].astype("category").cat.codes,
            "method": lg["login.method"].astype("category").cat.codes,
            "success": lg["login.success"],
            "failed_attempts": lg["login.failed_attempts"],
            "no_user_agent": lg["user_agent"].isna(),
            **{c: users[c] for c in ("account_age_days", "mfa_enabled", "logins_per_day", "past_compromises")},
            **{c: ips[c] for c in ("abuse_score", "is_datacenter", "is_tor", "users_7d")},
            **{c: lg[c] for c in datagen.VELOCITY_COLUMNS},
        }
    ).astype(np.float64)


def test_a_quick_model_learns_it() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from threadpoolctl import threadpool_limits

    world = datagen.generate(5, n_users=1500, n_ips=4000, n_logins=60_000)
    x, y = _model_frame(world), world.logins["is_takeover"].to_numpy()
    cut = int(0.7 * len(x))  # time-ordered: train on the past, score the future
    model = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, early_stopping=False, random_state=0)
    with threadpool_limits(limits=1):  # OpenMP threads on a busy machine cost more than they win here
        model.fit(x.iloc[:cut], y[:cut])
    auc = roc_auc_score(y[cut:], model.predict_proba(x.iloc[cut:])[:, 1])
    truth = datagen.takeover_logit(datagen.observables(world.logins, world.users, world.ips))
    bayes = roc_auc_score(y[cut:], truth[cut:])
    assert auc > 0.85 and bayes < 0.99  # learnable, and not trivially so


_WIRE_KEYS = {"event_id", "user_id", "ip", "event_time_ms", "device", "geo", "login"}


def _check_schema(ev: dict[str, Any], start: int) -> None:
    assert _WIRE_KEYS <= set(ev) <= _WIRE_KEYS | {"user_agent"}
    assert isinstance(ev["event_id"], str) and ev["event_id"].startswith("l")
    assert isinstance(ev["user_id"], str) and isinstance(ev["ip"], str)
    ipaddress.IPv4Address(ev["ip"])
    assert type(ev["event_time_ms"]) is int and ev["event_time_ms"] >= start
    assert set(ev["device"]) == {"id", "os"} and isinstance(ev["device"]["id"], str)
    assert ev["device"]["os"] in datagen.OSES
    assert set(ev["geo"]) == {"country"} and ev["geo"]["country"] in datagen.COUNTRIES
    login = ev["login"]
    assert set(login) == {"method", "success", "failed_attempts"} and login["method"] in datagen.METHODS
    assert type(login["success"]) is bool
    assert type(login["failed_attempts"]) is int and login["failed_attempts"] >= 0
    assert ev.get("user_agent") is None or isinstance(ev["user_agent"], str)


def test_iter_events_wire_schema_and_entities() -> None:
    params = datagen.WorldParams(n_users=600, n_ips=1500)
    start = 1_800_000_000_000
    events = list(datagen.iter_events(3, start, world=params, limit=20_000))
    assert len(events) == 20_000
    for ev in events:
        _check_schema(ev, start)
    times = [int(str(e["event_time_ms"])) for e in events]
    assert times == sorted(times)
    last: dict[object, int] = {}
    for e, t in zip(events, times):
        assert last.get(e["user_id"], -1) < t  # a user's events never share a millisecond
        last[e["user_id"]] = t
    assert len({e["event_id"] for e in events}) == len(events)
    known_users = set(datagen.user_ids(600))
    known_ips = set(datagen.generate_entities(3, 600, 1500)[1]["ip"])
    unknown_user = [e for e in events if e["user_id"] not in known_users]
    unknown_ip = [e for e in events if e["ip"] not in known_ips]
    assert 0.005 < (len(unknown_user) + len(unknown_ip)) / len(events) < 0.02
    assert all(str(e["user_id"]).startswith(datagen.UNKNOWN_USER_PREFIX) for e in unknown_user)
    assert all(ipaddress.IPv4Address(e["ip"]) in ipaddress.IPv4Network("198.18.0.0/15") for e in unknown_ip)
    # Optional user agent: mostly present, sometimes absent, sometimes null.
    absent = sum("user_agent" not in e for e in events) / len(events)
    null = sum("user_agent" in e and e["user_agent"] is None for e in events) / len(events)
    assert 0.005 < absent < 0.1 and 0.005 < null < 0.1
    # Attacks as in training: some address tries many accounts, mostly failing.
    per_ip: dict[object, set[object]] = defaultdict(set)
    for e in events:
        per_ip[e["ip"]].add(e["user_id"])
    assert max(len(v) for v in per_ip.values()) >= 20
    failed = sum(not e["login"]["success"] for e in events) / len(events)  # type: ignore[index]
    assert 0.08 < failed < 0.25


def test_iter_events_is_deterministic_and_shares_entities(small: datagen.World) -> None:
    a = list(datagen.iter_events(3, 1_800_000_000_000, world=small, limit=3000))
    b = list(islice(datagen.iter_events(3, 1_800_000_000_000, world=small.params), 3000))
    assert a == b
    assert {e["user_id"] for e in a} & set(small.users["user_id"])
    assert {e["ip"] for e in a} & set(small.ips["ip"])


def test_iter_events_defaults_run() -> None:
    ev = next(datagen.iter_events(7))
    assert _WIRE_KEYS <= set(ev)


def test_write_offline(tmp_path: Path, small: datagen.World) -> None:
    datagen.write_offline(small, tmp_path, NOW)
    now, history = pd.Timestamp(NOW), pd.Timestamp(datagen.WORLD_EPOCH_MS - datagen.DAY_MS, unit="ms", tz="UTC")
    n_users, n_ips, n_logins = len(small.users), len(small.ips), len(small.logins)
    expect = {
        "user_profile": (datagen.USER_PROFILE_COLUMNS, "user_id"),
        "ip_reputation": (datagen.IP_REPUTATION_COLUMNS, "ip"),
        "user_login_velocity": (("user_id", *datagen.VELOCITY_COLUMNS), "user_id"),
    }
    frames = {}
    for name, (cols, key) in expect.items():
        df = pd.read_parquet(tmp_path / f"{name}.parquet")
        assert list(df.columns) == [*cols, "event_timestamp", "created"], name
        assert str(df["event_timestamp"].dtype) == "datetime64[ns, UTC]" == str(df["created"].dtype)
        assert df[key].dtype == "string"
        frames[name] = df
    for name, n in (("user_profile", n_users), ("ip_reputation", n_ips)):
        df = frames[name]
        assert len(df) == 2 * n
        assert (df["event_timestamp"].iloc[:n] == history).all() and (df["event_timestamp"].iloc[n:] == now).all()
        pd.testing.assert_frame_equal(  # history and snapshot hold the same values
            df.iloc[:n, :-2].reset_index(drop=True), df.iloc[n:, :-2].reset_index(drop=True)
        )
    prof = frames["user_profile"]
    assert prof["home_country"].dtype == "string" and prof["primary_device"].dtype == "string"
    assert prof["mfa_enabled"].dtype == bool and prof["usual_login_hour"].dtype == np.float32
    assert prof["logins_per_day"].dtype == np.float32 and prof["account_age_days"].dtype == np.int64
    rep = frames["ip_reputation"]
    assert rep["abuse_score"].dtype == np.float32 and rep["is_tor"].dtype == bool and rep["users_7d"].dtype == np.int64
    vel = frames["user_login_velocity"]
    assert len(vel) == n_logins + n_users
    hist, snap = vel.iloc[:n_logins], vel.iloc[n_logins:].reset_index(drop=True)
    stamps = pd.to_datetime(small.logins["event_time_ms"], unit="ms", utc=True)
    assert (hist["event_timestamp"].to_numpy() == stamps.to_numpy()).all()
    for c in datagen.VELOCITY_COLUMNS:
        assert vel[c].dtype == np.int64
        assert (hist[c].to_numpy() == small.logins[c].to_numpy()).all()
    assert (snap["event_timestamp"] == now).all()
    at_end = datagen.velocity_at(small, small.end_ms)
    pd.testing.assert_frame_equal(snap[list(at_end.columns)], at_end.astype({"user_id": "string"}))
    assert list(tmp_path.glob(".*.tmp")) == []


def test_write_offline_refuses_a_now_inside_the_world(tmp_path: Path, small: datagen.World) -> None:
    with pytest.raises(ValueError, match="before the world's end"):
        datagen.write_offline(small, tmp_path, datetime(2024, 1, 15, tzinfo=timezone.utc))


def test_training_events(small: datagen.World) -> None:
    ev = datagen.training_events(small)
    assert list(ev.columns) == [
        "user_id", "ip", "event_timestamp", *[c for c in datagen.WIRE_COLUMNS if c not in ("user_id", "ip")],
        "is_takeover",
    ]
    assert len(ev) == len(small.logins) and str(ev["event_timestamp"].dtype) == "datetime64[ns, UTC]"
    assert (ev["event_timestamp"].astype("int64") // 1_000_000 == small.logins["event_time_ms"]).all()
    assert (ev["is_takeover"].to_numpy() == small.logins["is_takeover"].to_numpy()).all()


def test_feast_point_in_time_join_returns_the_worlds_values(tmp_path: Path) -> None:
    """Feast's own join over write_offline's files gives training's values; online, the snapshot's."""
    from feast import FeatureStore

    world = datagen.generate(11, n_users=150, n_ips=400, n_logins=3_000)
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "feature_repo" / "features.py", repo / "features.py")
    (repo / "feature_store.yaml").write_text(
        "project: atotest\nprovider: local\nregistry: data/registry.db\n"
        "online_store:\n  type: sqlite\n  path: data/online.db\noffline_store:\n  type: file\n"
        "entity_key_serialization_version: 3\n"
    )
    datagen.write_offline(world, repo / "data", NOW)
    spec = importlib.util.spec_from_file_location("ato_test_feature_repo", repo / "features.py")
    assert spec is not None and spec.loader is not None
    definitions = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(definitions)
    store = FeatureStore(repo_path=str(repo))
    store.apply(definitions.ATO_OBJECTS)
    service = store.get_feature_service("ato_model_v1")

    joined = store.get_historical_features(entity_df=datagen.training_events(world), features=service).to_df()
    joined = joined.set_index("event_id").loc[world.logins["event_id"]]
    users = world.users.set_index("user_id").loc[world.logins["user_id"]]
    ips = world.ips.set_index("ip").loc[world.logins["ip"]]
    for col in datagen.VELOCITY_COLUMNS:
        assert (joined[col].to_numpy() == world.logins[col].to_numpy()).all(), col
    for col in datagen.USER_PROFILE_COLUMNS[1:]:
        assert (joined[col].to_numpy() == users[col].to_numpy()).all(), col
    for col in datagen.IP_REPUTATION_COLUMNS[1:]:
        assert (joined[col].to_numpy() == ips[col].to_numpy()).all(), col

    store.materialize(start_date=NOW - timedelta(days=121), end_date=NOW + timedelta(seconds=1))
    sample = world.users.iloc[:40]
    rows = [{"user_id": u, "ip": ip} for u, ip in zip(sample["user_id"], sample["home_ip"])]
    online = store.get_online_features(features=service, entity_rows=rows).to_df()
    at_end = datagen.velocity_at(world, world.end_ms).iloc[:40]
    for col in datagen.VELOCITY_COLUMNS:
        assert (online[col].to_numpy() == at_end[col].to_numpy()).all(), col
    assert (online["home_country"].to_numpy() == sample["home_country"].to_numpy()).all()
