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

# ---- account takeover (ATO) on login events --------------------------------------------------
# Offline data: examples.ato.datagen.write_offline. Profiles carry a history row per entity (a day
# before the world starts) and a current one; user_login_velocity carries one row per historical
# login, stamped at the login's time with its values as of just before it, so a point-in-time join
# returns training's values. Online it is kept fresh by a streaming job over the logins topic, with
# datagen's windows: for a login at t, the same user's earlier logins with t - W <= t_j <= t.

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING, description="An account")
ip = Entity(name="ip", join_keys=["ip"], value_type=ValueType.STRING, description="A client IP address")

user_profile = FeatureView(
    name="user_profile",
    entities=[user],
    ttl=timedelta(days=120),
    schema=[
        Field(name="account_age_days", dtype=Int64),
        Field(name="home_country", dtype=String),
        Field(name="primary_device", dtype=String),
        Field(name="mfa_enabled", dtype=Bool),
        Field(name="usual_login_hour", dtype=Float32),
        Field(name="logins_per_day", dtype=Float32),
        Field(name="past_compromises", dtype=Int64),
    ],
    source=_source("user_profile"),
    online=True,
)

ip_reputation = FeatureView(
    name="ip_reputation",
    entities=[ip],
    ttl=timedelta(days=120),
    schema=[
        Field(name="abuse_score", dtype=Float32),
        Field(name="is_datacenter", dtype=Bool),
        Field(name="is_tor", dtype=Bool),
        Field(name="users_7d", dtype=Int64),
    ],
    source=_source("ip_reputation"),
    online=True,
)

user_login_velocity = FeatureView(
    name="user_login_velocity",
    entities=[user],
    ttl=timedelta(days=1),
    schema=[
        Field(name="logins_10m", dtype=Int64),
        Field(name="failed_logins_1h", dtype=Int64),
        Field(name="distinct_ips_1d", dtype=Int64),
        Field(name="distinct_devices_1d", dtype=Int64),
    ],
    source=_source("user_login_velocity"),
    online=True,
)

ato_model_v1 = FeatureService(
    name="ato_model_v1",
    features=[user_profile, ip_reputation, user_login_velocity],
    description="Online features of the account-takeover model v1",
)

ATO_OBJECTS = [user, ip, user_profile, ip_reputation, user_login_velocity, ato_model_v1]
# ---- end of account takeover -----------------------------------------------------------------

# What workers.features.feast_sdk.setup_features applies (the feast CLI finds the same objects itself).
OBJECTS = [card, merchant, card_profile, merchant_risk, card_velocity, fraud_model_v1, *ATO_OBJECTS]
