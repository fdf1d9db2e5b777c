"""The Feast repository: its configuration (Redis from ``Settings`` only) and ``setup``.

``repo_config`` loads ``feature_store.yaml`` and replaces ``online_store.connection_string`` with
one derived from ``STREAMSCORE_REDIS_URL`` / ``STREAMSCORE_REDIS_PASSWORD``, so the yaml's literal
only serves hand-run feast CLI calls. (Feast 0.67 does run ``os.path.expandvars`` over the yaml,
but an unset variable stays a literal ``${...}``, and a second Redis knob would be a second way to
configure one thing.)

``setup_features`` is what ``streamscore setup`` runs for a topology: the topology's
``dev.offline_data`` hook writes the offline data of its example, ``feast apply`` registers the
repository's definitions, and the views of the topology's feature service are materialized into
Redis. Feast is imported lazily: importing it costs seconds.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from workers.features.health import mark_materialized
from workers.features.base import FeatureStoreError
from workers.hooks import load_hook
from workers.settings import Settings

if TYPE_CHECKING:
    from feast.repo_config import RepoConfig

    from workers.topology import Topology

log = logging.getLogger("streamscore.feast")

FEATURE_DEFINITIONS = "features.py"
DATA_DIR = "data"
# Short socket timeouts: a reader that cannot reach Redis must fall back to defaults within a
# batch's budget, not hang. Setup uses the same string; its operations are small per command.
REDIS_CONNECT_TIMEOUT_S = 0.5
REDIS_SOCKET_TIMEOUT_S = 2.0


# ---- configuration ------------------------------------------------------------------------


def redis_connection_string(settings: Settings) -> str:
    """Feast's Redis connection string (``host:port,db=N[,password=..][,ssl=true],...``)."""
    u = urlparse(settings.redis_url)
    host, port = settings.redis_host_port
    parts = [f"{host}:{port}", f"db={settings.redis_db}"]
    password = (
        settings.redis_password.get_secret_value()
        if settings.redis_password is not None
        else (unquote(u.password) if u.password else None)
    )
    if password:
        if "," in password or "=" in password:
            # Feast splits the string on ',' and '='; such a password cannot be expressed.
            raise FeatureStoreError("Redis password contains ',' or '=', which Feast's connection string cannot carry")
        parts.append(f"password={password}")
    if u.scheme == "rediss":
        parts.append("ssl=true")
    parts += [f"socket_connect_timeout={REDIS_CONNECT_TIMEOUT_S}", f"socket_timeout={REDIS_SOCKET_TIMEOUT_S}"]
    return ",".join(parts)


def repo_config(repo_path: Path, settings: Settings) -> RepoConfig:
    """``feature_store.yaml`` of ``repo_path`` with the online store pointed per ``settings``."""
    from feast.repo_config import load_repo_config

    repo_path = Path(repo_path).resolve()
    yaml_path = repo_path / "feature_store.yaml"
    if not yaml_path.is_file():
        raise FeatureStoreError(f"{yaml_path} does not exist — is {repo_path} the Feast repository?")
    cfg = load_repo_config(repo_path, yaml_path)
    if getattr(cfg.online_store, "type", None) != "redis":
        raise FeatureStoreError(f"{yaml_path}: online_store.type must be redis")
    cfg.online_store.connection_string = redis_connection_string(settings)
    return cfg


def redis_unreachable(settings: Settings) -> str:
    host, port = settings.redis_host_port
    return f"Redis at {host}:{port} did not answer — is `streamscore dev up` running?"


def _ping_redis(settings: Settings, timeout_s: float = 2.0) -> None:
    import redis

    pw = settings.redis_password.get_secret_value() if settings.redis_password is not None else None
    client = redis.Redis.from_url(
        settings.redis_url, password=pw, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
    )
    try:
        client.ping()
    except redis.exceptions.AuthenticationError as e:
        raise FeatureStoreError(f"Redis at {settings.redis_url} refused the credentials: {e}") from e
    except (redis.exceptions.RedisError, OSError) as e:
        raise FeatureStoreError(f"{redis_unreachable(settings)} ({e})") from e
    finally:
        client.close()


def _load_definitions(repo_path: Path) -> ModuleType:
    path = repo_path / FEATURE_DEFINITIONS
    spec = importlib.util.spec_from_file_location("streamscore_feature_repo", path)
    if spec is None or spec.loader is None:
        raise FeatureStoreError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- set-up --------------------------------------------------------------------------------


def apply_definitions(store: Any, repo: Path) -> None:
    """``feast apply`` of the repository's ``OBJECTS`` (every example's entities, views, services)."""
    definitions = _load_definitions(repo)
    objects = getattr(definitions, "OBJECTS", None)
    if not objects:
        raise FeatureStoreError(f"{repo / FEATURE_DEFINITIONS} defines no OBJECTS list to apply")
    store.apply(objects)


def setup_features(settings: Settings, topology: Topology, seed: int = 7) -> None:
    """Write the topology's offline data, ``apply`` the repo, materialize its service's views.

    Idempotent: re-running rewrites the same values with a newer timestamp. Raises
    ``FeatureStoreError`` with what to do when Redis is unreachable or the repo is broken.
    """
    from feast import FeatureStore

    t0 = time.perf_counter()
    repo = Path(settings.feature_repo).resolve()
    cfg = repo_config(repo, settings)
    _ping_redis(settings)
    if topology.features is None:
        log.info("topology %s reads no online features; nothing to set up in Feast", topology.id)
        return
    # Whole seconds: Feast stores second+nanos, and a round stamp makes re-runs easy to compare.
    now = datetime.now(timezone.utc).replace(microsecond=0)
    if topology.dev.offline_data:
        write = load_hook(topology.dev.offline_data, f"{topology.source_path}: dev.offline_data")
        write(repo / DATA_DIR, now, seed)
    t_data = time.perf_counter()

    store = FeatureStore(repo_path=str(repo), config=cfg)
    apply_definitions(store, repo)
    t_apply = time.perf_counter()
    service_name = topology.features.feature_service
    try:
        service = store.get_feature_service(service_name)
    except Exception as e:
        raise FeatureStoreError(
            f"{topology.source_path}: feature service {service_name!r} is not defined in "
            f"{repo / FEATURE_DEFINITIONS} ({e})") from e
    views = [store.get_feature_view(p.name) for p in service.feature_view_projections]
    longest_ttl = max((fv.ttl for fv in views if fv.ttl), default=timedelta(days=1))
    try:
        store.materialize(start_date=now - longest_ttl - timedelta(hours=1),
                          end_date=now + timedelta(seconds=1), feature_views=[fv.name for fv in views])
    except Exception as e:
        import redis

        if isinstance(e, (redis.exceptions.RedisError, OSError)):
            raise FeatureStoreError(f"{redis_unreachable(settings)} ({e})") from e
        if isinstance(e, FileNotFoundError) or "No such file" in str(e):
            raise FeatureStoreError(
                f"materializing {service_name!r}: offline data is missing ({e}); does "
                f"{topology.source_path}'s dev.offline_data write every view of the service?") from e
        raise
    # The reader's check that the store was not emptied since (workers/features/health.py).
    mark_materialized(settings, cfg.project, [fv.name for fv in views])
    log.info(
        "features of %s set up: data %.1fs, apply %.1fs, materialize %.1fs (%s)", service_name,
        t_data - t0, t_apply - t_data, time.perf_counter() - t_apply, ", ".join(fv.name for fv in views),
    )


def served_features(repo_path: Path, settings: Settings, feature_service: str) -> dict[str, str]:
    """``view:feature`` -> "string" or "numeric" for what ``feature_service`` serves (registry)."""
    from feast import FeatureStore

    repo = Path(repo_path).resolve()
    store = FeatureStore(repo_path=str(repo), config=repo_config(repo, settings))
    try:
        service = store.get_feature_service(feature_service)
    except Exception as e:  # registry missing or service unknown: both mean "set up first"
        raise FeatureStoreError(
            f"feature service {feature_service!r} not found in {repo}'s registry ({e}) — "
            "run `streamscore setup --topology <your topology>`"
        ) from e
    out: dict[str, str] = {}
    for p in service.feature_view_projections:
        for f in p.features:
            vt = f.dtype.to_value_type().name
            out[f"{p.name}:{f.name}"] = "string" if vt == "STRING" else "numeric"
    return out
