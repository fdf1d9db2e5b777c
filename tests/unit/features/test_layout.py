"""The redis_fast reader's Redis keys against Feast's own entity-key serialization (no services)."""

from __future__ import annotations

import struct

from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.value_type import ValueType

from workers.features.layout import feast_key_builder, string_key_builder


def test_string_key_builder_is_feasts_serialization() -> None:
    fast = string_key_builder("card_id", "streamscore")
    slow = feast_key_builder("card_id", ValueType.STRING, "streamscore", 3)
    for v in ("c000001", "", "ü" * 70, "x" * 1000):
        ek = EntityKey(join_keys=["card_id"], entity_values=[Value(string_val=v)])
        assert fast(v) == slow(v) == serialize_entity_key(ek, entity_key_serialization_version=3) + b"streamscore"
    assert fast("c1")[:4] == struct.pack("<I", 1)
