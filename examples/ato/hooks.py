"""The account-takeover example's hooks, named by data (topologies/ato.yaml's ``dev`` section, its
training spec and its model inputs). The core never imports this module.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from examples.ato import datagen

HOUR_MS = 3_600_000


def write_offline_data(data_dir: Path, now: datetime, seed: int) -> None:
    """Feast offline data of the three ATO views: history for training plus a snapshot at ``now``."""
    datagen.write_offline(datagen.generate(seed), data_dir, now)


def iter_stream(seed: int, start_ms: int) -> Iterator[dict[str, object]]:
    """The load producer's logins: the world's users and IPs with attacks, ~1% unknown on purpose."""
    return datagen.iter_events(seed, start_ms)


def training_entities(seed: int, n_logins: int = datagen.DEFAULT_N_LOGINS) -> pd.DataFrame:
    """The entity frame for Feast's point-in-time join: user_id, ip, event_timestamp, the login's
    fields (dotted names) and the label ``is_takeover``, in time order."""
    return datagen.training_events(datagen.generate(seed, n_logins=n_logins))


def hour_distance(events: Mapping[str, npt.NDArray[np.float64]],
                  online: Mapping[str, npt.NDArray[np.float64]]) -> npt.NDArray[np.float32]:
    """Circular distance (0..12 hours) between the login's UTC hour and the user's usual hour.

    A model input the vocabulary has no op for: ``hook`` with reads [event_time_ms,
    user_profile:usual_login_hour]. Training and the worker both call it.
    """
    hour = np.mod(events["event_time_ms"], 86_400_000) / HOUR_MS
    d = np.abs(hour - online["user_profile:usual_login_hour"])
    return np.minimum(d, 24.0 - d).astype(np.float32).reshape(-1, 1)
