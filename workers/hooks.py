"""``module:function`` references: how topologies, training specs and manifests name user code.

The core never imports an example; a topology or manifest names the function it needs (a custom
model-input function, a load generator, an offline-data writer) and it is imported here, once, at
start-up, with an error that says what to fix when it cannot be.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

HOOK_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
_HOOK = re.compile(HOOK_PATTERN)


class HookError(ValueError):
    """A ``module:function`` reference cannot be used; the message says why."""


def load_hook(ref: str, what: str) -> Callable[..., Any]:
    """The function ``ref`` names. ``what`` says what it is for, in the error message."""
    if not _HOOK.match(ref):
        raise HookError(f"{what}: {ref!r} is not a 'package.module:function' reference")
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise HookError(
            f"{what}: cannot import module {module_name!r} ({e}); is it installed, or run from the "
            "directory that holds it?"
        ) from e
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise HookError(f"{what}: module {module_name!r} has no function {attr!r}")
    return fn  # type: ignore[no-any-return]
