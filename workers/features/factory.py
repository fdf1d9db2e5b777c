"""``make_reader``: the feature reader a topology names (``features.reader``), guarded against an
emptied store (``health.GuardedReader``)."""

from __future__ import annotations

from workers.features.base import FeatureReader, NoFeatures
from workers.features.health import GuardedReader, StoreHealth
from workers.model.manifest import ModelManifest
from workers.settings import Settings
from workers.topology import Topology


def make_reader(topology: Topology, settings: Settings, manifest: ModelManifest) -> FeatureReader:
    spec = topology.features
    if spec is None:
        return NoFeatures()
    from workers.features.feast_repo import repo_config

    project = str(repo_config(settings.feature_repo, settings).project)
    if spec.reader == "feast_sdk":
        from workers.features.feast_sdk import FeastSdkReader

        sdk = FeastSdkReader(settings.feature_repo, spec.feature_service, manifest, settings=settings)
        return GuardedReader(sdk, StoreHealth(settings, project, sdk.views), settings)
    from workers.features.redis_fast import FastRedisReader

    fast = FastRedisReader.from_topology(topology, settings, manifest)
    return GuardedReader(fast, StoreHealth(settings, project, fast.views), settings)
