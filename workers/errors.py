"""Which exceptions are the user's to fix (shown as one clear line) vs bugs (shown with a trace)."""

from __future__ import annotations


def is_user_error(exc: BaseException) -> bool:
    from workers.engines.base import EngineError
    from workers.source import SourceError
    from workers.topology import TopologyError

    known: tuple[type[BaseException], ...] = (TopologyError, EngineError, SourceError)
    try:
        from workers.devstack import StackError

        known += (StackError,)
    except ImportError:
        pass
    try:
        from workers.manifest import ManifestError

        known += (ManifestError,)
    except ImportError:
        pass
    try:
        from workers.featurestore import FeatureStoreError

        known += (FeatureStoreError,)
    except ImportError:
        pass
    try:
        from workers.velocity_app import VelocityAppError

        known += (VelocityAppError,)
    except ImportError:
        pass
    return isinstance(exc, known)
