"""Seeded synthetic login world with real account-takeover (ATO) signal.

One seed fixes everything: the users and IP addresses (shared by the Feast tables, the training
set and the load producer's stream), the historical logins used for training, and the stream.

How takeovers arise here, so that the model has something true to learn:

* Ordinary traffic: a user logs in around their usual hour of the day, from their primary (or
  second) device, from their home or mobile IP in their home country, with their usual method
  (password, SSO or passkey). Some sessions begin with a typo (a failed try, then a success), a
  few users log in through a VPN (a datacenter IP, often abroad), some travel, some get a new
  device. These are the innocent look-alikes that keep the labels from being trivial.
* Credential stuffing: one datacenter IP (or an abused residential proxy) replays a leaked
  credential list against many users within minutes: password logins from bot devices at any
  hour, mostly failed, a few successful (users without MFA who reuse their password).
* Targeted takeovers: a vulnerable user (no MFA, past compromises) is attacked from a fresh
  device, usually from abroad through tor, a datacenter or a proxy: several failed tries minutes
  apart, then a success, often followed by more logins from that device within hours.
* The label of *every* login (attack or not) is drawn from one logistic of observable quantities
  (``takeover_logit`` over ``observables``): new device, foreign country, datacenter and tor IPs,
  the IP's abuse score, the user's failed logins in the last hour, distinct IPs and devices in
  the last day, the circular distance of the login hour from the user's usual hour, no MFA, the
  method (passkey logins are almost never taken over, password logins most), past compromises,
  failed tries earlier in the session, and a failed outcome. "Takeover" therefore means "part of
  a takeover attempt, as an investigation would confirm", successful or not. Attacks merely put
  many rows where that logistic is high; ordinary rows can still be labelled, rarely, and attack
  rows are not always labelled.

Velocity values per login are "as of just before it": over the same user's *earlier* logins with
``t - W <= t_j <= t``, the login itself excluded (``velocity``). A user's logins never share a
millisecond, so "earlier" is unambiguous, and a Feast point-in-time join of the velocity row
stamped at a login's own time returns exactly that login's values. A streaming job maintaining
``user_login_velocity`` must use the same windows (``WINDOW_*_MS``) and the same semantics.

Profile tables (``user_profile``, ``ip_reputation``) are held constant over the world: Feast gets
one history row per entity stamped a day before the world starts (what training joins) and the
same values stamped "now" (what materialization copies online), so training and serving read the
same numbers. ``users_7d`` is the reputation provider's figure and ``logins_per_day`` the user's
typical rate; neither is counted from the world's logins, which would leak the future into the
history rows.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

# Fixed so that the same seed yields byte-identical tables on every machine and every day.
WORLD_EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MIN_MS = 60_000
SEC_MS = 1_000

WINDOW_10M_MS = 10 * MIN_MS
WINDOW_1H_MS = HOUR_MS
WINDOW_1D_MS = DAY_MS

# Profile history rows are stamped this long before the world's first login. The views' TTL
# (120 days) must cover this plus the span, or training joins would find no profile.
PROFILE_HISTORY_OFFSET_MS = DAY_MS

DEFAULT_N_USERS = 5_000
DEFAULT_N_IPS = 12_000
DEFAULT_N_LOGINS = 200_000
DEFAULT_SPAN_DAYS = 60

# The load producer keys Kafka messages by this field, so a user's logins stay in order.
KEY_FIELD = "user_id"

COUNTRIES: tuple[str, ...] = (
    "US", "GB", "DE", "FR", "CA", "NL", "ES", "IT", "AU", "BR", "MX", "JP", "IN", "PL", "SE",
)
_HOME_WEIGHTS = np.array([30, 12, 10, 8, 6, 4, 4, 4, 4, 4, 3, 3, 3, 3, 2], dtype=np.float64)
# Where datacenters (and tor exits) sit: a few hosting countries dominate.
_HOSTING_WEIGHTS = np.array([30, 5, 14, 8, 4, 16, 1, 1, 2, 2, 1, 3, 3, 3, 4], dtype=np.float64)

OSES: tuple[str, ...] = ("ios", "android", "windows", "macos", "linux")
_OS_WEIGHTS = np.array([0.30, 0.30, 0.22, 0.14, 0.04])
METHODS: tuple[str, ...] = ("password", "sso", "passkey")
PASSWORD, SSO, PASSKEY = 0, 1, 2
IP_KINDS: tuple[str, ...] = ("residential", "mobile", "datacenter", "tor")
RESIDENTIAL, MOBILE, DATACENTER, TOR = 0, 1, 2, 3
PATTERNS: tuple[str, ...] = ("ordinary", "stuffing", "targeted")

# A few browser versions per entry of OSES; what a device sends does not change over the world.
_UA_TABLE = np.array(
    [
        [
            f"Mozilla/5.0 (iPhone; CPU iPhone OS {v} like Mac OS X) AppleWebKit/605.1.15 "
            f"(KHTML, like Gecko) Version/{v.replace('_', '.')} Mobile/15E148 Safari/604.1"
            for v in ("16_6", "17_1", "17_2")
        ],
        [
            f"Mozilla/5.0 (Linux; Android {v}; K) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/120.0.0.0 Mobile Safari/537.36"
            for v in ("12", "13", "14")
        ],
        [
            f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{v}.0.0.0 Safari/537.36"
            for v in ("119", "120", "121")
        ],
        [
            f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
            f"(KHTML, like Gecko) Version/{v} Safari/605.1.15"
            for v in ("16.6", "17.1", "17.2")
        ],
        [
            f"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{v}.0.0.0 Safari/537.36"
            for v in ("119", "120", "121")
        ],
    ],
    dtype=object,
)
_BOT_UAS = np.array(
    ["python-requests/2.31.0", "curl/8.4.0", "Go-http-client/1.1", "okhttp/4.12.0"], dtype=object
)

# Shares of all logins that belong to attacks, and the logistic that labels every login. Tuned so
# that the overall takeover rate is about 2 % and a good model reaches a held-out AUC of about 0.95
# (the Bayes limit is a little higher: labels are noisy on purpose).
_STUFFING_SHARE = 0.035
_TARGETED_SHARE = 0.010
_LABEL_INTERCEPT = -7.1
_W_NEW_DEVICE = 1.6
_W_FOREIGN = 1.2
_W_DATACENTER = 0.8
_W_TOR = 1.5
_W_ABUSE = 2.0
_W_FAILED_1H = 0.8  # per log1p(count)
_W_DISTINCT_IPS = 0.6  # per log1p(distinct - 1)
_W_DISTINCT_DEVICES = 0.7  # per log1p(distinct - 1)
_W_HOUR = 1.2  # per circular hour distance / 12
_W_NO_MFA = 0.7
_W_METHOD = np.array([0.0, -0.9, -4.0])  # per METHODS entry
_W_PAST_COMPROMISES = 0.4
_W_FAILED_ATTEMPTS = 0.5  # per log1p(count)
_W_FAILED = 0.5

# A very small unknown-entity share in the stream exercises the feature readers' defaults.
UNKNOWN_USER_PREFIX = "ux"
# RFC 2544's benchmarking block 198.18.0.0/15: no table's address is ever drawn from it.
UNKNOWN_IP_BASE = (198 << 24) | (18 << 16)
UNKNOWN_IP_SIZE = 1 << 17

WIRE_COLUMNS: tuple[str, ...] = (
    "event_id", "user_id", "ip", "event_time_ms", "device.id", "device.os", "geo.country",
    "login.method", "login.success", "login.failed_attempts", "user_agent",
)
VELOCITY_COLUMNS: tuple[str, ...] = (
    "logins_10m", "failed_logins_1h", "distinct_ips_1d", "distinct_devices_1d",
)
USER_PROFILE_COLUMNS: tuple[str, ...] = (
    "user_id", "account_age_days", "home_country", "primary_device", "mfa_enabled",
    "usual_login_hour", "logins_per_day", "past_compromises",
)
IP_REPUTATION_COLUMNS: tuple[str, ...] = ("ip", "abuse_score", "is_datacenter", "is_tor", "users_7d")

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]
Obj = npt.NDArray[np.object_]


@dataclass(frozen=True)
class WorldParams:
    """Sizes of a world. Entities depend only on (seed, n_users, n_ips)."""

    n_users: int = DEFAULT_N_USERS
    n_ips: int = DEFAULT_N_IPS
    n_logins: int = DEFAULT_N_LOGINS
    span_days: int = DEFAULT_SPAN_DAYS

    @property
    def span_ms(self) -> int:
        return self.span_days * DAY_MS

    @property
    def logins_per_s(self) -> float:
        """Event-time density of the historical data (what the model's velocity values assume)."""
        return self.n_logins / (self.span_ms / 1000.0)


@dataclass(frozen=True)
class World:
    """Everything one seed generates.

    ``users``: the ``USER_PROFILE_COLUMNS`` plus generator-only columns (preferred_method,
    primary_os, second_device, second_os, primary_ua, second_ua, home_ip, mobile_ip, vpn_user,
    hour_sd, activity, vulnerability).
    ``ips``: the ``IP_REPUTATION_COLUMNS`` plus generator-only country, kind, is_proxy.
    ``logins``: the ``WIRE_COLUMNS`` (nested fields flattened with dotted names, ``user_agent``
    None where absent), the generator-only ``pattern`` (one of PATTERNS), the label
    ``is_takeover`` and the ``VELOCITY_COLUMNS`` as of just before each login; sorted by
    event_time_ms.
    """

    seed: int
    params: WorldParams
    users: pd.DataFrame
    ips: pd.DataFrame
    logins: pd.DataFrame

    @property
    def end_ms(self) -> int:
        return WORLD_EPOCH_MS + self.params.span_ms


def _rng(seed: int, stream: int, *extra: int) -> np.random.Generator:
    # Separate streams per purpose: entities must not change when n_logins changes.
    return np.random.default_rng([seed, stream, *extra])


def user_ids(n: int) -> Obj:
    return np.array([f"u{i:06d}" for i in range(n)], dtype=object)


def _hex_ids(rng: np.random.Generator, prefix: str, n: int, bits: int = 48) -> Obj:
    vals = rng.integers(0, 2**bits, size=n, dtype=np.int64)
    width = bits // 4
    return np.array([f"{prefix}{v:0{width}x}" for v in vals.tolist()], dtype=object)


def format_ipv4(v: I64) -> Obj:
    return np.array(
        [f"{x >> 24}.{(x >> 16) & 255}.{(x >> 8) & 255}.{x & 255}" for x in v.tolist()], dtype=object
    )


def _public_ipv4(rng: np.random.Generator, n: int) -> I64:
    """``n`` distinct unicast addresses outside private, loopback, CGNAT and the unknown block."""
    out = np.empty(0, dtype=np.int64)
    while out.shape[0] < n:
        cand = rng.integers(1 << 24, 224 << 24, size=2 * n + 64, dtype=np.int64)
        a, b = cand >> 24, (cand >> 16) & 255
        bad = (
            (a == 10) | (a == 127)
            | ((a == 100) & (b >= 64) & (b < 128))
            | ((a == 169) & (b == 254))
            | ((a == 172) & (b >= 16) & (b < 32))
            | ((a == 192) & (b == 168))
            | ((cand >= UNKNOWN_IP_BASE) & (cand < UNKNOWN_IP_BASE + UNKNOWN_IP_SIZE))
        )
        cand = np.concatenate([out, cand[~bad]])
        _, first = np.unique(cand, return_index=True)
        out = cand[np.sort(first)]  # first-drawn order, so the result does not depend on a sort
    return out[:n]


def generate_entities(seed: int, n_users: int, n_ips: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Users and IPs of a world (without the login-volume-derived ``logins_per_day``)."""
    k = len(COUNTRIES)
    if n_ips < 2 * k + 2:
        raise ValueError(
            f"n_ips must be at least {2 * k + 2} (a residential and a mobile IP per country), got {n_ips}"
        )
    if n_users < 1:
        raise ValueError(f"n_users must be at least 1, got {n_users}")
    rng = _rng(seed, 1)
    # IPs. The first 2k are one clean residential and one mobile address per country, so that
    # every country has somewhere for its users to live.
    kind = rng.choice(4, size=n_ips, p=[0.72, 0.08, 0.17, 0.03]).astype(np.int64)
    kind[:k], kind[k : 2 * k], kind[2 * k], kind[2 * k + 1] = RESIDENTIAL, MOBILE, DATACENTER, TOR
    country = np.where(
        kind <= MOBILE,
        rng.choice(k, size=n_ips, p=_HOME_WEIGHTS / _HOME_WEIGHTS.sum()),
        rng.choice(k, size=n_ips, p=_HOSTING_WEIGHTS / _HOSTING_WEIGHTS.sum()),
    ).astype(np.int64)
    country[:k], country[k : 2 * k] = np.arange(k), np.arange(k)
    proxy = (kind == RESIDENTIAL) & (rng.random(n_ips) < 0.06)  # hijacked home routers
    proxy[: 2 * k] = False
    abuse = np.select(
        [proxy, kind == RESIDENTIAL, kind == MOBILE, kind == DATACENTER],
        [rng.beta(5.0, 4.0, n_ips), rng.beta(1.0, 40.0, n_ips), rng.beta(1.2, 25.0, n_ips), rng.beta(2.0, 5.0, n_ips)],
        rng.beta(8.0, 2.0, n_ips),
    )
    users_7d = np.select(
        [kind == RESIDENTIAL, kind == MOBILE, kind == DATACENTER],
        [1 + rng.poisson(1.0, n_ips), rng.poisson(np.exp(rng.normal(4.5, 0.6, n_ips))),
         rng.poisson(np.exp(rng.normal(1.5, 1.2, n_ips)))],
        rng.poisson(np.exp(rng.normal(5.0, 0.5, n_ips))),
    )
    # Addresses attackers already used elsewhere have been seen with many accounts.
    users_7d = users_7d + (proxy | (kind == DATACENTER)) * rng.poisson(60.0 * abuse**2)
    ips = pd.DataFrame(
        {
            "ip": format_ipv4(_public_ipv4(rng, n_ips)),
            "abuse_score": np.round(abuse, 3).astype(np.float32),
            "is_datacenter": (kind == DATACENTER) | ((kind == TOR) & (rng.random(n_ips) < 0.5)),
            "is_tor": kind == TOR,
            "users_7d": users_7d.astype(np.int64),
            "country": np.array(COUNTRIES, dtype=object)[country],
            "kind": np.array(IP_KINDS, dtype=object)[kind],
            "is_proxy": proxy,
        }
    )
    # Users
    home = rng.choice(k, size=n_users, p=_HOME_WEIGHTS / _HOME_WEIGHTS.sum())
    method = rng.choice(3, size=n_users, p=[0.65, 0.22, 0.13])
    mfa = rng.random(n_users) < np.where(method == PASSKEY, 0.75, 0.28)
    vulnerability = np.exp(rng.normal(0.0, 0.8, n_users))
    os1 = rng.choice(len(OSES), size=n_users, p=_OS_WEIGHTS)
    os2 = rng.choice(len(OSES), size=n_users, p=_OS_WEIGHTS)
    clean_home = _by_country((kind == RESIDENTIAL) & ~proxy, country, k)
    mobile = _by_country(kind == MOBILE, country, k)
    ip_str = ips["ip"].to_numpy(object)
    users = pd.DataFrame(
        {
            "user_id": user_ids(n_users),
            "account_age_days": np.minimum(rng.exponential(900.0, n_users).astype(np.int64) + 1, 3650),
            "home_country": np.array(COUNTRIES, dtype=object)[home],
            "primary_device": _hex_ids(rng, "d", n_users),
            "mfa_enabled": mfa,
            "usual_login_hour": np.round(np.mod(rng.normal(13.0, 4.5, n_users), 24.0), 2).astype(np.float32),
            "past_compromises": rng.poisson(0.12 * vulnerability).astype(np.int64),
            "preferred_method": np.array(METHODS, dtype=object)[method],
            "primary_os": np.array(OSES, dtype=object)[os1],
            "second_device": _hex_ids(rng, "d", n_users),
            "second_os": np.array(OSES, dtype=object)[os2],
            "primary_ua": _UA_TABLE[os1, rng.integers(0, _UA_TABLE.shape[1], n_users)],
            "second_ua": _UA_TABLE[os2, rng.integers(0, _UA_TABLE.shape[1], n_users)],
            "home_ip": ip_str[_pick(rng, clean_home, home)],
            "mobile_ip": ip_str[_pick(rng, mobile, home)],
            "vpn_user": rng.random(n_users) < 0.05,
            "hour_sd": rng.uniform(1.0, 3.5, n_users),
            "activity": np.exp(rng.normal(0.0, 0.7, n_users)),
            "vulnerability": vulnerability,
        }
    )
    return users, ips


_Pool = tuple[I64, I64, I64]  # member indices grouped by country, offset and count per country


def _by_country(mask: Bool, country: I64, k: int) -> _Pool:
    idx = np.flatnonzero(mask).astype(np.int64)
    idx = idx[np.argsort(country[idx], kind="stable")]
    counts = np.bincount(country[idx], minlength=k).astype(np.int64)
    return idx, np.cumsum(counts) - counts, counts


def _pick(rng: np.random.Generator, pool: _Pool, country: I64) -> I64:
    """One uniformly chosen member of ``pool`` in each requested country (each must have one)."""
    idx, offsets, counts = pool
    return idx[offsets[country] + (rng.random(country.shape[0]) * counts[country]).astype(np.int64)]


@dataclass(frozen=True)
class _Sim:
    """The entity arrays ``_simulate`` reads, prepared once per world (and once per stream)."""

    home: I64
    method: I64
    mfa: Bool
    usual_hour: F64
    hour_sd: F64
    activity_p: F64
    devices: tuple[Obj, Obj]
    oses: tuple[I64, I64]
    uas: tuple[Obj, Obj]
    home_ip: I64
    mobile_ip: I64
    vpn: Bool
    vulnerability: F64
    stuffing_victim_p: F64
    targeted_victim_p: F64
    ip_country: I64
    domestic: _Pool  # clean residential and mobile addresses per country
    datacenter: I64
    stuffing_ip_p: F64
    targeted_ip_p: F64

    @staticmethod
    def of(users: pd.DataFrame, ips: pd.DataFrame) -> _Sim:
        k = len(COUNTRIES)
        cidx = {c: i for i, c in enumerate(COUNTRIES)}
        oidx = {o: i for i, o in enumerate(OSES)}
        midx = {m: i for i, m in enumerate(METHODS)}
        kinds = ips["kind"].to_numpy(object)
        proxy = ips["is_proxy"].to_numpy(bool)
        abuse = ips["abuse_score"].to_numpy(np.float64)
        ip_country = ips["country"].map(cidx).to_numpy(np.int64)
        ip_index = pd.Index(ips["ip"])
        method = users["preferred_method"].map(midx).to_numpy(np.int64)
        mfa = users["mfa_enabled"].to_numpy(bool)
        vul = users["vulnerability"].to_numpy(np.float64)
        act = users["activity"].to_numpy(np.float64)
        # Leaked lists hold reused passwords: MFA and passkey users are worth less to stuff.
        stuff_w = vul * np.where(mfa, 0.4, 1.0) * np.where(method == PASSKEY, 0.3, 1.0)
        tgt_w = (
            vul * np.where(mfa, 0.25, 1.0) * np.where(method == PASSKEY, 0.03, 1.0)
            * (1.0 + users["past_compromises"].to_numpy(np.float64))
        )
        # Stuffing runs mostly from rented servers, takeovers through whatever anonymises best.
        stuff_ip_w = abuse**2 * np.where(kinds == "datacenter", 1.0, np.where(proxy, 0.25, 0.0))
        tgt_ip_w = abuse * ((kinds == "datacenter") | (kinds == "tor") | proxy)
        return _Sim(
            home=users["home_country"].map(cidx).to_numpy(np.int64),
            method=method,
            mfa=mfa,
            usual_hour=users["usual_login_hour"].to_numpy(np.float64),
            hour_sd=users["hour_sd"].to_numpy(np.float64),
            activity_p=act / act.sum(),
            devices=(users["primary_device"].to_numpy(object), users["second_device"].to_numpy(object)),
            oses=(users["primary_os"].map(oidx).to_numpy(np.int64), users["second_os"].map(oidx).to_numpy(np.int64)),
            uas=(users["primary_ua"].to_numpy(object), users["second_ua"].to_numpy(object)),
            home_ip=ip_index.get_indexer(users["home_ip"]).astype(np.int64),
            mobile_ip=ip_index.get_indexer(users["mobile_ip"]).astype(np.int64),
            vpn=users["vpn_user"].to_numpy(bool),
            vulnerability=vul,
            stuffing_victim_p=stuff_w / stuff_w.sum(),
            targeted_victim_p=tgt_w / tgt_w.sum(),
            ip_country=ip_country,
            domestic=_by_country(((kinds == "residential") & ~proxy) | (kinds == "mobile"), ip_country, k),
            datacenter=np.flatnonzero(kinds == "datacenter").astype(np.int64),
            stuffing_ip_p=stuff_ip_w / stuff_ip_w.sum(),
            targeted_ip_p=tgt_ip_w / tgt_ip_w.sum(),
        )


def _segment_cumsum(x: I64, lens: I64) -> I64:
    """Cumulative sum of ``x`` restarting at each segment of ``lens`` (vectorized)."""
    cs = np.cumsum(x)
    starts = np.cumsum(lens) - lens
    base = np.repeat(cs[starts] - x[starts], lens)
    return np.asarray(cs - base, dtype=np.int64)


def _positions(lens: I64) -> tuple[I64, I64]:
    """Segment index and position within the segment of every row of segments ``lens``."""
    seg = np.repeat(np.arange(lens.shape[0], dtype=np.int64), lens)
    return seg, np.arange(int(lens.sum()), dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)


def _trim(lens: I64, target: int) -> int:
    """How many leading segments hold ``target`` rows; shortens the last one in place to fit."""
    cs = np.cumsum(lens)
    k = int(np.searchsorted(cs, target))  # first segment where the total reaches target
    lens[k] -= int(cs[k]) - target
    return k + 1


def _start_times(
    rng: np.random.Generator, m: int, start_ms: int, span_ms: int, duration: I64, fit: bool
) -> I64:
    t = start_ms + (rng.random(m) * span_ms).astype(np.int64)
    if fit:
        # A bounded world keeps every member inside its span (1 s spare for same-ms nudges).
        t = np.maximum(np.minimum(t, start_ms + span_ms - SEC_MS - duration), start_ms)
    return t


def _gaps(rng: np.random.Generator, mean_ms: F64 | float, floor_ms: int, first: Bool) -> I64:
    g = rng.exponential(mean_ms, size=first.shape[0]).astype(np.int64) + floor_ms
    g[first] = 0  # the first member starts its segment
    return g


_Rows = dict[str, np.ndarray]


def _some_missing(rng: np.random.Generator, values: Obj, share: float) -> Obj:
    out = values.astype(object)  # a copy
    out[rng.random(out.shape[0]) < share] = None
    return out


def _ordinary(rng: np.random.Generator, s: _Sim, n: int, start_ms: int, span_ms: int, fit: bool) -> _Rows:
    # Sessions: a few failed tries (typos; never with a passkey) and then, nearly always, a success.
    user, method, fails, ok = [], [], [], []
    total = 0
    while total < n:
        m = n - total + 16
        u = rng.choice(s.home.shape[0], size=m, p=s.activity_p)
        meth = np.where(rng.random(m) < 0.9, s.method[u], PASSWORD)
        f = np.where(meth == PASSKEY, 0, rng.choice(4, size=m, p=[0.92, 0.05, 0.02, 0.01]))
        gave_up = rng.random(m) < 0.01
        f = np.where(gave_up, np.maximum(f, 1), f)
        user.append(u)
        method.append(meth)
        fails.append(f)
        ok.append(~gave_up)
        total += int((f + ~gave_up).sum())
    u, meth, f, success_ends = (np.concatenate(a) for a in (user, method, fails, ok))
    lens = (f + success_ends).astype(np.int64)
    k = _trim(lens, n)
    u, meth, f, success_ends, lens = u[:k], meth[:k], f[:k], success_ends[:k], lens[:k]

    # Device: primary, second, or a new one (a new phone, a friend's laptop).
    r = rng.random(k)
    fresh_os = rng.choice(len(OSES), size=k, p=_OS_WEIGHTS)
    device = np.where(r < 0.86, s.devices[0][u], s.devices[1][u])
    device[r >= 0.96] = _hex_ids(rng, "d", int((r >= 0.96).sum()))
    os_ = np.where(r < 0.86, s.oses[0][u], np.where(r < 0.96, s.oses[1][u], fresh_os))
    ua = np.where(
        r < 0.86, s.uas[0][u],
        np.where(r < 0.96, s.uas[1][u], _UA_TABLE[fresh_os, rng.integers(0, _UA_TABLE.shape[1], k)]),
    )
    ua = _some_missing(rng, ua, 0.06)  # native clients send no user agent
    # Network: home, mobile, elsewhere at home (work, café), abroad (travel), or a VPN.
    r = rng.random(k)
    abroad = (s.home[u] + rng.integers(1, len(COUNTRIES), k)) % len(COUNTRIES)
    ip = np.where(
        r < 0.60, s.home_ip[u],
        np.where(
            r < 0.82, s.mobile_ip[u],
            np.where(r < 0.93, _pick(rng, s.domestic, s.home[u]),
                     np.where(r < 0.965, _pick(rng, s.domestic, abroad), s.home_ip[u])),
        ),
    )
    vpn = s.vpn[u] & (rng.random(k) < 0.5)
    ip = np.where(vpn, s.datacenter[rng.integers(0, s.datacenter.shape[0], k)], ip)

    seg, pos = _positions(lens)
    gaps = _gaps(rng, 8.0 * SEC_MS, 2 * SEC_MS, pos == 0)
    offs = _segment_cumsum(gaps, lens)
    duration = offs[np.cumsum(lens) - 1]
    t0 = _start_times(rng, k, start_ms, span_ms, duration, fit)
    if span_ms >= DAY_MS:
        # Around the user's usual hour; a short streaming window simply takes whatever hour it is.
        hour = np.mod(s.usual_hour[u] + rng.normal(0.0, s.hour_sd[u]), 24.0)
        t0 = t0 - (t0 - WORLD_EPOCH_MS) % DAY_MS + (hour * HOUR_MS).astype(np.int64)
        end = start_ms + span_ms - (SEC_MS + duration if fit else 1)
        t0 = np.where(t0 > end, t0 - DAY_MS, np.where(t0 < start_ms, t0 + DAY_MS, t0))
        t0 = np.clip(t0, start_ms, np.maximum(end, start_ms))
    return {
        "t": t0[seg] + offs,
        "user": u[seg],
        "ip": ip[seg],
        "device": device[seg],
        "os": os_[seg],
        "method": meth[seg],
        "success": success_ends[seg] & (pos == f[seg]),
        "failed_attempts": pos,
        "ua": ua[seg],
        "pattern": np.zeros(pos.shape[0], dtype=np.int64),
    }


def _stuffing(rng: np.random.Generator, s: _Sim, n: int, start_ms: int, span_ms: int, fit: bool) -> _Rows:
    # Bursts of one password try per leaked credential, seconds apart, from one address.
    lens = np.empty(0, dtype=np.int64)
    while int(lens.sum()) < n:
        lens = np.concatenate([lens, np.minimum(5 + rng.geometric(1.0 / 30.0, size=n // 30 + 4), 200)])
    k = _trim(lens, n)
    lens = lens[:k]
    ip = rng.choice(s.ip_country.shape[0], size=k, p=s.stuffing_ip_p)
    os_ = np.where(rng.random(k) < 0.5, OSES.index("windows"), OSES.index("linux"))
    device = _hex_ids(rng, "d", k)
    ua = np.where(rng.random(k) < 0.6, _BOT_UAS[rng.integers(0, _BOT_UAS.shape[0], k)],
                  _UA_TABLE[OSES.index("windows"), rng.integers(0, _UA_TABLE.shape[1], k)])
    ua = _some_missing(rng, ua, 0.1)
    seg, pos = _positions(lens)
    m = int(pos.shape[0])
    gaps = _gaps(rng, 3.0 * SEC_MS, 100, pos == 0)
    offs = _segment_cumsum(gaps, lens)
    t0 = _start_times(rng, k, start_ms, span_ms, offs[np.cumsum(lens) - 1], fit)
    victim = rng.choice(s.home.shape[0], size=m, p=s.stuffing_victim_p)
    # The bot rotates device ids for half its tries.
    dev = np.where(rng.random(m) < 0.5, _hex_ids(rng, "d", m), device[seg])
    p_ok = np.where(s.mfa[victim], 0.004, 0.04 * np.clip(s.vulnerability[victim], 0.2, 3.0))
    return {
        "t": t0[seg] + offs,
        "user": victim,
        "ip": ip[seg],
        "device": dev,
        "os": os_[seg],
        "method": np.full(m, PASSWORD, dtype=np.int64),
        "success": rng.random(m) < p_ok,
        "failed_attempts": np.zeros(m, dtype=np.int64),
        "ua": ua[seg],
        "pattern": np.ones(m, dtype=np.int64),
    }


def _targeted(rng: np.random.Generator, s: _Sim, n: int, start_ms: int, span_ms: int, fit: bool) -> _Rows:
    # Per attack: f failed tries, a success (unless it gives up), then j logins within hours.
    fails, ok, after = [], [], []
    total = 0
    while total < n:
        m = (n - total) // 3 + 4
        f = np.minimum(rng.poisson(2.5, m) + (rng.random(m) < 0.8), 8)
        gives_up = rng.random(m) < 0.15
        f = np.where(gives_up, np.maximum(f, 1), f)
        j = np.where(gives_up | (rng.random(m) < 0.4), 0, 1 + np.minimum(rng.poisson(0.8, m), 2))
        fails.append(f)
        ok.append(~gives_up)
        after.append(j)
        total += int((f + ~gives_up + j).sum())
    f, succeeds, j = (np.concatenate(a) for a in (fails, ok, after))
    lens = (f + succeeds + j).astype(np.int64)
    k = _trim(lens, n)
    f, succeeds, lens = f[:k], succeeds[:k], lens[:k]
    victim = rng.choice(s.home.shape[0], size=k, p=s.targeted_victim_p)
    # Mostly through an anonymising address; otherwise a clean one next door to the victim.
    from_pool = rng.random(k) < 0.75
    ip = np.where(
        from_pool,
        rng.choice(s.ip_country.shape[0], size=k, p=s.targeted_ip_p),
        _pick(rng, s.domestic, s.home[victim]),
    )
    os_ = rng.choice(len(OSES), size=k, p=_OS_WEIGHTS)
    ua = _some_missing(rng, _UA_TABLE[os_, rng.integers(0, _UA_TABLE.shape[1], k)], 0.05)
    method = np.where(rng.random(k) < 0.9, PASSWORD, SSO)
    device = _hex_ids(rng, "d", k)
    seg, pos = _positions(lens)
    session = pos <= f[seg]
    gaps = np.where(
        session,
        _gaps(rng, 60.0 * SEC_MS, 5 * SEC_MS, pos == 0),
        _gaps(rng, 40.0 * MIN_MS, 2 * MIN_MS, pos == 0),
    )
    offs = _segment_cumsum(gaps, lens)
    t0 = _start_times(rng, k, start_ms, span_ms, offs[np.cumsum(lens) - 1], fit)
    return {
        "t": t0[seg] + offs,
        "user": victim[seg],
        "ip": ip[seg],
        "device": device[seg],
        "os": os_[seg],
        "method": method[seg],
        "success": succeeds[seg] & (pos >= f[seg]),
        "failed_attempts": np.where(session, pos, 0).astype(np.int64),
        "ua": ua[seg],
        "pattern": np.full(pos.shape[0], 2, dtype=np.int64),
    }


def strictly_increasing_per_user(user: I64, t_ms: I64) -> I64:
    """``t_ms`` nudged forward by the fewest milliseconds that give each user distinct times.

    A user's rows keep their order (by time, then input order); other rows are untouched.
    """
    n = user.shape[0]
    if n == 0:
        return t_ms.copy()
    order = np.lexsort((np.arange(n), t_ms, user))
    u, t = user[order], t_ms[order]
    pos = np.arange(n, dtype=np.int64)
    t_rel = t - t.min()
    big = int(t_rel.max()) + n + 1
    # Running max of (t - pos) per user, plus pos, is the smallest strictly increasing bound.
    shifted = np.maximum.accumulate(u * big + t_rel - pos) - u * big + pos + t.min()
    out = np.empty(n, dtype=np.int64)
    out[order] = shifted
    return out


def _simulate(
    rng: np.random.Generator, s: _Sim, n: int, start_ms: int, span_ms: int, fit: bool
) -> pd.DataFrame:
    """``n`` raw logins (ordinary sessions, stuffing bursts, targeted attacks) from ``start_ms``.

    With ``fit`` every row lies in [start_ms, start_ms + span_ms); otherwise attacks that start
    late run past the end (they last minutes to hours) and streaming callers carry them over.
    Sorted by time, a user's times distinct; no labels, no velocity.
    """
    n_stuff = int(round(n * _STUFFING_SHARE))
    n_tgt = int(round(n * _TARGETED_SHARE))
    parts = [_ordinary(rng, s, n - n_stuff - n_tgt, start_ms, span_ms, fit)]
    if n_stuff:
        parts.append(_stuffing(rng, s, n_stuff, start_ms, span_ms, fit))
    if n_tgt:
        parts.append(_targeted(rng, s, n_tgt, start_ms, span_ms, fit))
    rows = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    return _frame(rng, s, rows)


def _frame(rng: np.random.Generator, s: _Sim, rows: _Rows) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "event_time_ms": rows["t"].astype(np.int64),
            "user_idx": rows["user"].astype(np.int64),
            "ip_idx": rows["ip"].astype(np.int64),
            "device.id": rows["device"].astype(object),
            "device.os": np.array(OSES, dtype=object)[rows["os"]],
            "geo.country": np.array(COUNTRIES, dtype=object)[s.ip_country[rows["ip"]]],
            "login.method": np.array(METHODS, dtype=object)[rows["method"]],
            "login.success": rows["success"].astype(bool),
            "login.failed_attempts": rows["failed_attempts"].astype(np.int64),
            "user_agent": rows["ua"].astype(object),
            "pattern": np.array(PATTERNS, dtype=object)[rows["pattern"]],
        }
    )
    return _ordered(rng, out)


def _ordered(rng: np.random.Generator, rows: pd.DataFrame) -> pd.DataFrame:
    """Rows with distinct per-user times, sorted by time (then user), with fresh event ids."""
    t = strictly_increasing_per_user(rows["user_idx"].to_numpy(np.int64), rows["event_time_ms"].to_numpy(np.int64))
    rows = rows.assign(event_time_ms=t).sort_values(["event_time_ms", "user_idx"], kind="stable")
    rows = rows.reset_index(drop=True)
    if "event_id" not in rows:
        rows.insert(0, "event_id", _hex_ids(rng, "l", len(rows), bits=60))
    return rows


def velocity(user_idx: I64, t_ms: I64, ip_code: I64, device_code: I64, success: Bool) -> dict[str, I64]:
    """The four per-user velocity values of each row, as of just before it (row excluded).

    Windows hold the same user's rows with ``t - W <= t_j <= t`` that come earlier (by time,
    then input order). Vectorized: sorting plus ``searchsorted``, and a short loop over window
    depth for the distinct counts.
    """
    n = user_idx.shape[0]
    order = np.lexsort((np.arange(n), t_ms, user_idx))
    u, t = user_idx[order], t_ms[order]
    t_rel = t - t.min() if n else t
    big = int(t_rel.max() if n else 0) + 2 * DAY_MS
    key = u * big + t_rel
    pos = np.arange(n, dtype=np.int64)

    def lo(window: int) -> I64:
        return np.searchsorted(key, key - window, side="left").astype(np.int64)

    lo10, lo1h, lo1d = lo(WINDOW_10M_MS), lo(WINDOW_1H_MS), lo(WINDOW_1D_MS)
    failed = np.concatenate([[0], np.cumsum(~success[order])]).astype(np.int64)
    res_sorted = {
        "logins_10m": pos - lo10,
        "failed_logins_1h": failed[pos] - failed[lo1h],
        "distinct_ips_1d": _distinct_before(u, ip_code[order], lo1d),
        "distinct_devices_1d": _distinct_before(u, device_code[order], lo1d),
    }
    inv = np.empty(n, dtype=np.int64)
    inv[order] = pos
    return {name: v[inv] for name, v in res_sorted.items()}


def _distinct_before(u: I64, v: I64, lo: I64) -> I64:
    """Per row i (sorted by user, time): distinct ``v`` among rows [lo[i], i)."""
    n = u.shape[0]
    pos = np.arange(n, dtype=np.int64)
    # Index of the next row (in this order) with the same user and value, n if none.
    o2 = np.lexsort((pos, v, u))
    nxt = np.full(n, n, dtype=np.int64)
    same = (u[o2][1:] == u[o2][:-1]) & (v[o2][1:] == v[o2][:-1])
    nxt[o2[:-1][same]] = o2[1:][same]
    # A value counts once: at its last occurrence inside [lo, i).
    distinct = np.zeros(n, dtype=np.int64)
    depth = int((pos - lo).max()) if n else 0
    for d in range(1, depth + 1):
        j = pos - d
        ok = j >= lo
        jj = np.where(ok, j, 0)
        distinct += ok & (nxt[jj] >= pos)
    return distinct


def observables(logins: pd.DataFrame, users: pd.DataFrame, ips: pd.DataFrame) -> pd.DataFrame:
    """What the labelling logistic reads, per login: its own fields, the profiles, the velocity.

    ``logins`` needs the dotted wire columns and the ``VELOCITY_COLUMNS``; every user and IP must
    be in ``users`` and ``ips``.
    """
    ui = pd.Index(users["user_id"]).get_indexer(logins["user_id"])
    ii = pd.Index(ips["ip"]).get_indexer(logins["ip"])
    if (ui < 0).any() or (ii < 0).any():
        raise ValueError("observables: some logins name a user or IP that the tables do not hold")
    t = logins["event_time_ms"].to_numpy(np.int64)
    hour = ((t - WORLD_EPOCH_MS) % DAY_MS) / HOUR_MS
    gap = np.abs(hour - users["usual_login_hour"].to_numpy(np.float64)[ui])
    return pd.DataFrame(
        {
            "new_device": logins["device.id"].to_numpy(object) != users["primary_device"].to_numpy(object)[ui],
            "foreign": logins["geo.country"].to_numpy(object) != users["home_country"].to_numpy(object)[ui],
            "is_datacenter": ips["is_datacenter"].to_numpy(bool)[ii],
            "is_tor": ips["is_tor"].to_numpy(bool)[ii],
            "abuse_score": ips["abuse_score"].to_numpy(np.float64)[ii],
            "failed_logins_1h": logins["failed_logins_1h"].to_numpy(np.int64),
            "distinct_ips_1d": logins["distinct_ips_1d"].to_numpy(np.int64),
            "distinct_devices_1d": logins["distinct_devices_1d"].to_numpy(np.int64),
            "hour_distance": np.minimum(gap, 24.0 - gap),
            "no_mfa": ~users["mfa_enabled"].to_numpy(bool)[ui],
            "method": logins["login.method"].map({m: i for i, m in enumerate(METHODS)}).to_numpy(np.int64),
            "past_compromises": users["past_compromises"].to_numpy(np.int64)[ui],
            "failed_attempts": logins["login.failed_attempts"].to_numpy(np.int64),
            "failed": ~logins["login.success"].to_numpy(bool),
        }
    )


def takeover_logit(obs: pd.DataFrame) -> F64:
    """The ground-truth log-odds of takeover (what the generator labels with)."""

    def col(name: str) -> F64:
        return np.asarray(obs[name], dtype=np.float64)

    return np.asarray(
        _LABEL_INTERCEPT
        + _W_NEW_DEVICE * col("new_device")
        + _W_FOREIGN * col("foreign")
        + _W_DATACENTER * col("is_datacenter")
        + _W_TOR * col("is_tor")
        + _W_ABUSE * col("abuse_score")
        + _W_FAILED_1H * np.log1p(col("failed_logins_1h"))
        + _W_DISTINCT_IPS * np.log1p(np.maximum(col("distinct_ips_1d") - 1.0, 0.0))
        + _W_DISTINCT_DEVICES * np.log1p(np.maximum(col("distinct_devices_1d") - 1.0, 0.0))
        + _W_HOUR * col("hour_distance") / 12.0
        + _W_NO_MFA * col("no_mfa")
        + _W_METHOD[obs["method"].to_numpy(np.int64)]
        + _W_PAST_COMPROMISES * col("past_compromises")
        + _W_FAILED_ATTEMPTS * np.log1p(col("failed_attempts"))
        + _W_FAILED * col("failed"),
        dtype=np.float64,
    )


def generate(
    seed: int,
    n_users: int = DEFAULT_N_USERS,
    n_ips: int = DEFAULT_N_IPS,
    n_logins: int = DEFAULT_N_LOGINS,
    span_days: int = DEFAULT_SPAN_DAYS,
) -> World:
    """A deterministic world: same arguments → identical DataFrames."""
    if n_logins < 1 or span_days < 1:
        raise ValueError(f"n_logins and span_days must be at least 1, got {n_logins} and {span_days}")
    params = WorldParams(n_users, n_ips, n_logins, span_days)
    users, ips = generate_entities(seed, n_users, n_ips)
    sim = _Sim.of(users, ips)
    rng = _rng(seed, 2)
    raw = _simulate(rng, sim, n_logins, WORLD_EPOCH_MS, params.span_ms, fit=True)
    ui = raw["user_idx"].to_numpy(np.int64)
    vel = velocity(
        ui,
        raw["event_time_ms"].to_numpy(np.int64),
        raw["ip_idx"].to_numpy(np.int64),
        pd.factorize(raw["device.id"])[0].astype(np.int64),
        raw["login.success"].to_numpy(bool),
    )
    # The typical rate of the user's own logins (what a profile job would have estimated).
    own = n_logins * (1.0 - _STUFFING_SHARE - _TARGETED_SHARE)
    users = users.copy()
    users.insert(
        6, "logins_per_day", np.round(sim.activity_p * own / span_days, 3).astype(np.float32)
    )
    logins = raw.assign(
        user_id=user_ids(n_users)[ui], ip=ips["ip"].to_numpy(object)[raw["ip_idx"].to_numpy(np.int64)], **vel
    )
    logit = takeover_logit(observables(logins, users, ips))
    logins["is_takeover"] = rng.random(len(logins)) < 1.0 / (1.0 + np.exp(-logit))
    cols = [*WIRE_COLUMNS, "pattern", "is_takeover", *VELOCITY_COLUMNS]
    return World(seed, params, users, ips, logins[cols].reset_index(drop=True))


def velocity_at(world: World, as_of_ms: int) -> pd.DataFrame:
    """Each user's velocity values as of ``as_of_ms`` (logins with ``as_of - W <= t_j <= as_of``)."""
    lg = world.logins
    t = lg["event_time_ms"].to_numpy(np.int64)
    ui = pd.Index(world.users["user_id"]).get_indexer(lg["user_id"])
    ok = lg["login.success"].to_numpy(bool)
    n = len(world.users)

    def in_window(w: int) -> Bool:
        return np.asarray((t >= as_of_ms - w) & (t <= as_of_ms), dtype=np.bool_)

    def distinct(col: str, w: Bool) -> I64:
        codes = pd.factorize(lg[col])[0]
        pairs = np.unique(np.stack([ui[w], codes[w]]), axis=1)
        return np.bincount(pairs[0], minlength=n).astype(np.int64)

    w10, w1h, w1d = in_window(WINDOW_10M_MS), in_window(WINDOW_1H_MS), in_window(WINDOW_1D_MS)
    return pd.DataFrame(
        {
            "user_id": world.users["user_id"].to_numpy(object),
            "logins_10m": np.bincount(ui[w10], minlength=n).astype(np.int64),
            "failed_logins_1h": np.bincount(ui[w1h & ~ok], minlength=n).astype(np.int64),
            "distinct_ips_1d": distinct("ip", w1d),
            "distinct_devices_1d": distinct("device.id", w1d),
        }
    )


def _utc(ts: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(ts)
    # A naive datetime is taken as UTC; Feast compares these stamps with aware UTC times.
    return stamp.tz_convert("UTC") if stamp.tzinfo is not None else stamp.tz_localize("UTC")


def _ms_to_utc(ms: I64) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(ms, unit="ms", utc=True)).as_unit("ns")


def write_offline(world: World, data_dir: Path, now: datetime) -> None:
    """Write the parquet files Feast's file sources read: point-in-time history plus a snapshot.

    ``user_profile`` and ``ip_reputation``: one row per entity stamped a day before the world
    starts (what training's point-in-time join finds) and the same values stamped ``now`` (what
    materialization copies online). ``user_login_velocity``: one row per login stamped at its
    own time with its as-of-just-before values, plus one row per user stamped ``now`` holding
    the values as of the world's end, which is what a streaming job would have left in the
    store. ``now`` must not be before the world's end, or the snapshot would shadow history.
    """
    stamp = _utc(now)
    if stamp.value // 1_000_000 < world.end_ms:
        raise ValueError(
            f"now={stamp.isoformat()} is before the world's end "
            f"({_ms_to_utc(np.array([world.end_ms]))[0].isoformat()}); pass the current time"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    history = _ms_to_utc(np.array([WORLD_EPOCH_MS - PROFILE_HISTORY_OFFSET_MS]))[0]

    def stamped(df: pd.DataFrame, ts: pd.Timestamp | pd.DatetimeIndex) -> pd.DataFrame:
        out = df.reset_index(drop=True).copy()
        out["event_timestamp"] = ts
        out["created"] = ts
        out["event_timestamp"] = out["event_timestamp"].astype("datetime64[ns, UTC]")
        out["created"] = out["created"].astype("datetime64[ns, UTC]")
        return out

    def history_and_now(df: pd.DataFrame) -> pd.DataFrame:
        return pd.concat([stamped(df, history), stamped(df, stamp)], ignore_index=True)

    strings = {"user_id": "string", "home_country": "string", "primary_device": "string", "ip": "string"}
    users = world.users[list(USER_PROFILE_COLUMNS)]
    ips = world.ips[list(IP_REPUTATION_COLUMNS)]
    lg = world.logins
    per_login = lg[["user_id", *VELOCITY_COLUMNS]]
    vel = pd.concat(
        [
            stamped(per_login, _ms_to_utc(lg["event_time_ms"].to_numpy(np.int64))),
            stamped(velocity_at(world, world.end_ms), stamp),
        ],
        ignore_index=True,
    )
    frames = {
        "user_profile": history_and_now(users),
        "ip_reputation": history_and_now(ips),
        "user_login_velocity": vel,
    }
    for name, df in frames.items():
        df = df.astype({c: t for c, t in strings.items() if c in df.columns})
        tmp = data_dir / f".{name}.parquet.tmp"
        df.to_parquet(tmp, index=False)
        tmp.replace(data_dir / f"{name}.parquet")  # readers never see a half-written file


def training_events(world: World) -> pd.DataFrame:
    """The entity dataframe for Feast's ``get_historical_features``.

    ``user_id``, ``ip`` and ``event_timestamp`` (the login's time, tz-aware UTC) drive the
    point-in-time join; the other wire columns and ``is_takeover`` ride along.
    """
    lg = world.logins
    out = pd.DataFrame(
        {
            "user_id": lg["user_id"].astype("string"),
            "ip": lg["ip"].astype("string"),
            "event_timestamp": _ms_to_utc(lg["event_time_ms"].to_numpy(np.int64)),
        }
    )
    for col in WIRE_COLUMNS:
        if col not in out:
            out[col] = lg[col].to_numpy()
    out["is_takeover"] = lg["is_takeover"].to_numpy(bool)
    return out


def iter_events(
    seed: int,
    start_ms: int | None = None,
    *,
    limit: int | None = None,
    rate_per_s: float | None = None,
    unknown_frac: float = 0.01,
    world: World | WorldParams | None = None,
    chunk_size: int = 4096,
) -> Iterator[dict[str, object]]:
    """Login events on the wire schema (nested dicts), endless unless ``limit`` is given.

    Uses the users and IPs of ``seed``'s world (``world``: a World, or a WorldParams to skip the
    historical logins; None means the default sizes), with attacks as in training. ``start_ms``
    defaults to the current wall-clock time. ``unknown_frac`` of events carry a user or an IP
    that no table knows (ids prefixed ``ux``, addresses in 198.18.0.0/15). Event time starts at
    ``start_ms`` and advances by ``rate_per_s`` events per second of event time; the default is
    the historical density, the only rate at which the velocity values the streaming job
    computes look like training's. ``user_agent`` is sometimes absent, sometimes null.
    Deterministic for a given (seed, sizes, start_ms, rate, chunk_size).
    """
    if world is None:
        world = WorldParams()
    if start_ms is None:
        start_ms = time.time_ns() // 1_000_000
    params = world.params if isinstance(world, World) else world
    if isinstance(world, World):
        users, ips = world.users, world.ips
    else:
        users, ips = generate_entities(seed, params.n_users, params.n_ips)
    rate = params.logins_per_s if rate_per_s is None else rate_per_s
    if rate <= 0:
        raise ValueError(f"rate_per_s must be > 0, got {rate}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    sim = _Sim.of(users, ips)
    rng = _rng(seed, 3, start_ms)
    uid, ip_str = user_ids(params.n_users), ips["ip"].to_numpy(object)
    chunk_ms = max(1, int(chunk_size / rate * 1000.0))
    window_start = start_ms
    pending = pd.DataFrame()
    emitted = 0
    while limit is None or emitted < limit:
        fresh = _simulate(rng, sim, chunk_size, window_start, chunk_ms, fit=False)
        window_end = window_start + chunk_ms
        rows = _ordered(rng, pd.concat([pending, fresh], ignore_index=True)) if len(pending) else fresh
        cut = int(np.searchsorted(rows["event_time_ms"].to_numpy(np.int64), window_end))
        ready, pending = rows.iloc[:cut], rows.iloc[cut:]
        window_start = window_end
        n = len(ready)
        unk = rng.random(n) < unknown_frac
        unk_user = unk & (rng.random(n) < 0.5)
        unk_ip = unk & ~unk_user
        unknown_users = _hex_ids(rng, UNKNOWN_USER_PREFIX, n, bits=32)
        users_col = np.where(unk_user, unknown_users, uid[ready["user_idx"].to_numpy(np.int64)])
        unknown_ips = format_ipv4(UNKNOWN_IP_BASE + rng.integers(0, UNKNOWN_IP_SIZE, n, dtype=np.int64))
        ips_col = np.where(unk_ip, unknown_ips, ip_str[ready["ip_idx"].to_numpy(np.int64)])
        ua_absent = rng.random(n) < 0.5  # of those without one: no key rather than a null
        fields = zip(
            ready["event_id"].tolist(),
            users_col.tolist(),
            ips_col.tolist(),
            ready["event_time_ms"].tolist(),
            ready["device.id"].tolist(),
            ready["device.os"].tolist(),
            ready["geo.country"].tolist(),
            ready["login.method"].tolist(),
            ready["login.success"].tolist(),
            ready["login.failed_attempts"].tolist(),
            ready["user_agent"].tolist(),
            ua_absent.tolist(),
        )
        for eid, user, ip, tms, dev, os_, country, method, ok, fails, ua, absent in fields:
            if limit is not None and emitted >= limit:
                return
            emitted += 1
            event: dict[str, object] = {
                "event_id": eid,
                "user_id": user,
                "ip": ip,
                "event_time_ms": tms,
                "device": {"id": dev, "os": os_},
                "geo": {"country": country},
                "login": {"method": method, "success": ok, "failed_attempts": fails},
            }
            if ua is not None or not absent:
                event["user_agent"] = ua
            yield event
