"""``make_reader``: the feature reader a topology names (``features.reader``)."""

from __future__ import annotations

from workers.features.base import FeatureReader, NoFeatures
from workers.model.manifest import ModelManifest
from workers.settings import Settings
from workers.topology import Topology


def make_reader(topology: Topology, settings: Settings, manifest: ModelManifest) -> FeatureReader:
    spec = topology.features
    if spec is None:
        return NoFeatures()
    if spec.reader == "feast_sdk":
        from workers.features.feast_sdk import FeastSdkReader

        return FeastSdkReader(settings.feature_repo, spec.feature_service, manifest,
                              settings=settings)
    from workers.features.redis_fast import FastRedisReader

    reader: FeatureReader = FastRedisReader.from_topology(topology, settings, manifest)
    return reader
