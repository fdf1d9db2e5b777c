"""The fraud example's hooks, named by data (topologies/fraud.yaml's ``dev`` section, the training
specs): what `streamscore setup`, `produce` and `model train` call for this example.

The core never imports this module; it is reached through ``module:function`` references.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pandas as pd

from examples.fraud import datagen


def write_offline_data(data_dir: Path, now: datetime, seed: int) -> None:
    """Feast offline data of the three views, stamped ``now`` (what `setup` materializes)."""
    datagen.write_offline(datagen.generate(seed), data_dir, now)


def iter_stream(seed: int, start_ms: int) -> Iterator[dict[str, object]]:
    """The load producer's transactions: the world's cards and merchants, ~1% unknown on purpose."""
    return datagen.iter_events(seed, None, start_ms)


def training_frame(seed: int, n_txns: int = datagen.DEFAULT_N_TXNS) -> pd.DataFrame:
    """Historical transactions with the online features as they were at transaction time.

    Card and merchant profiles are static in the generated world; velocity is the transaction's
    own "as of just before it" values. Columns: the event fields, ``view:feature`` per online
    feature, the label ``is_fraud``; sorted by event time.
    """
    world = datagen.generate(seed, n_txns=n_txns)
    tx = world.transactions.reset_index(drop=True)
    cards = world.cards.iloc[pd.Index(world.cards["card_id"]).get_indexer(tx["card_id"])].reset_index(drop=True)
    merch = world.merchants.iloc[
        pd.Index(world.merchants["merchant_id"]).get_indexer(tx["merchant_id"])
    ].reset_index(drop=True)
    cols: dict[str, object] = {c: tx[c].to_numpy() for c in (
        "event_id", "card_id", "merchant_id", "amount", "currency", "country", "device_id", "event_time_ms")}
    for f in datagen.CARD_PROFILE_COLUMNS[1:]:
        cols[f"card_profile:{f}"] = cards[f].to_numpy()
    for f in datagen.MERCHANT_RISK_COLUMNS[1:]:
        cols[f"merchant_risk:{f}"] = merch[f].to_numpy()
    for f in ("txn_count_10m", "txn_count_1h", "amount_sum_1h", "distinct_merchants_1d"):
        cols[f"card_velocity:{f}"] = tx[f].to_numpy()
    cols["is_fraud"] = tx["is_fraud"].to_numpy(dtype=bool)
    return pd.DataFrame(cols)
