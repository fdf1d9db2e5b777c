"""Features stage: the reader interface and the factory the worker uses.

A reader turns the entity keys of one micro-batch into ``OnlineFeatures`` in ONE round trip to the
online store. Readers: ``feast_sdk`` (Feast's own ``get_online_features``) and ``redis_fast`` (a
direct reader of Feast's Redis layout, see ``workers/fastfeatures.py``).
"""

from __future__ import annotations

from typing import Protocol

from workers.events import ObjArray, OnlineFeatures
from workers.manifest import ModelManifest
from workers.settings import Settings
from workers.topology import Topology


class FeatureReader(Protocol):
    def fetch(self, entities: dict[str, ObjArray]) -> OnlineFeatures:
        """``entities`` maps join key (e.g. ``card_id``) -> key per row; returns one row per row."""
        ...

    def close(self) -> None: ...


def make_reader(topology: Topology, settings: Settings, manifest: ModelManifest) -> FeatureReader:
    spec = topology.features
    if spec.reader == "feast_sdk":
        from workers.featurestore import FeastSdkReader

        return FeastSdkReader(settings.feature_repo, spec.feature_service, manifest,
                              settings=settings)
    from workers.fastfeatures import FastRedisReader

    reader: FeatureReader = FastRedisReader.from_topology(topology, settings, manifest)
    return reader
