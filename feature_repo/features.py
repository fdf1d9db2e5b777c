"""Feast definitions of streamscore: two entities, three feature views, one feature service.

Offline data: parquet files under ``data/`` written by ``examples.fraud.datagen.write_offline`` (paths
are relative to this repository). ``card_velocity`` is materialized once at setup and then kept
fresh by the streaming job, which writes Feast's Redis layout directly.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource
from feast.types import Bool, Float32, Float64, Int64, String
from feast.value_type import ValueType

card = Entity(name="card", join_keys=["card_id"], value_type=ValueType.STRING, description="A payment card")
merchant = Entity(
    name="merchant", join_keys=["merchant_id"], value_type=ValueType.STRING, description="A merchant"
)


def _source(name: str) -> FileSource:
    return FileSource(
        name=f"{name}_source",
        path=f"data/{name}.parquet",
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )


card_profile = FeatureView(
    name="card_profile",
    entities=[card],
    ttl=timedelta(days=30),
    schema=[
        Field(name="avg_amount", dtype=Float32),
        Field(name="std_amount", dtype=Float32),
        Field(name="txn_count_30d", dtype=Int64),
        Field(name="account_age_days", dtype=Int64),
        Field(name="night_txn_ratio", dtype=Float32),
        Field(name="chargeback_count", dtype=Int64),
        Field(name="is_premium", dtype=Bool),
        Field(name="home_country", dtype=String),
        Field(name="primary_device", dtype=String),
    ],
    source=_source("card_profile"),
    online=True,
)

merchant_risk = FeatureView(
    name="merchant_risk",
    entities=[merchant],
    ttl=timedelta(days=30),
    schema=[
        Field(name="fraud_rate", dtype=Float64),
        Field(name="chargeback_rate", dtype=Float32),
        Field(name="avg_amount", dtype=Float32),
        Field(name="category_risk", dtype=Float32),
        Field(name="age_days", dtype=Int64),
        Field(name="is_online", dtype=Bool),
    ],
    source=_source("merchant_risk"),
    online=True,
)

card_velocity = FeatureView(
    name="card_velocity",
    entities=[card],
    ttl=timedelta(days=1),
    schema=[
        Field(name="txn_count_10m", dtype=Int64),
        Field(name="txn_count_1h", dtype=Int64),
        Field(name="amount_sum_1h", dtype=Float32),
        Field(name="distinct_merchants_1d", dtype=Int64),
    ],
    source=_source("card_velocity"),
    online=True,
)

fraud_model_v1 = FeatureService(
    name="fraud_model_v1",
    features=[card_profile, merchant_risk, card_velocity],
    description="Online features of the fraud_mlp v1 model",
)

# What workers.features.feast_sdk.setup_features applies (the feast CLI finds the same objects itself).
OBJECTS = [card, merchant, card_profile, merchant_risk, card_velocity, fraud_model_v1]
