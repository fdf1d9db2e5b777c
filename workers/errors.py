"""Which exceptions are the user's to fix (shown as one clear line) vs bugs (shown with a trace)."""

from __future__ import annotations


def is_user_error(exc: BaseException) -> bool:
    # Imported here: the error path alone pays for these modules (none of them loads Feast or Faust).
    from workers.dev.stack import StackError
    from workers.engines.base import EngineError
    from workers.features.base import FeatureStoreError
    from workers.model.manifest import ManifestError
    from workers.pipeline.source import SourceError
    from workers.preflight import ServiceUnreachable
    from workers.serving.live import ModelRefused
    from workers.topology import TopologyError
    from workers.streaming.aggregates import AggregationAppError

    return isinstance(
        exc,
        (TopologyError, EngineError, SourceError, StackError, ManifestError, FeatureStoreError,
         AggregationAppError, ServiceUnreachable, ModelRefused),
    )
