"""Does a model fit a topology? The start-up check of the worker and of ``model register``.

A model carries its input contract (its manifest's ``inputs``); a topology says what its events
carry (``input.schema``), which feature service serves online features and how decisions are
made. Every mismatch is listed by name at once, before anything is consumed.
"""

from __future__ import annotations

from collections.abc import Mapping

from workers.model.inputs import InputSpecError
from workers.model.manifest import ModelManifest
from workers.topology import Topology


class ModelFitError(ValueError):
    """The model cannot serve this topology; the message lists every reason."""


def check_fit(manifest: ModelManifest, topology: Topology, served: Mapping[str, str] | None = None) -> None:
    """Refuse, naming them, inputs the topology's schema or feature service cannot provide.

    ``served``: what the feature service serves (``view:feature`` -> "numeric" | "string"), when
    known (``workers.features.feast_repo.served_features``); the readers check it too.
    """
    where = f"{topology.source_path or 'topology'} with model {manifest.name} v{manifest.version}"
    problems: list[str] = []
    reads_online = bool(manifest.online_numeric or manifest.online_strings or manifest.inputs.views)
    if reads_online and topology.features is None:
        problems.append(f"the model reads online features of {manifest.feature_service!r}; add a `features` "
                        "section naming that feature service")
    if topology.features is not None and manifest.feature_service is not None and \
            topology.features.feature_service != manifest.feature_service:
        problems.append(f"features.feature_service is {topology.features.feature_service!r}, the model was "
                        f"trained on {manifest.feature_service!r}")
    try:
        manifest.inputs.check(topology.input.schema_, served, where)
    except InputSpecError as e:
        problems += [ln.strip()[2:] for ln in str(e).splitlines()[1:]]
    if problems:
        raise ModelFitError(f"{where}: the model does not fit the topology:\n  - " + "\n  - ".join(problems))
