"""Training methods (``method`` in a training config): a registry of :class:`TrainingMethod` classes.

See :mod:`segweak.methods.base` for the contract and ``docs/methods.md`` for every method. Importing
this package imports each of its modules, so every method defined in them is registered.
"""

from __future__ import annotations

import importlib
import pkgutil

from segweak.methods.base import (
    LABELS,
    METHODS,
    SUBSETS,
    Need,
    NoOptions,
    TrainingMethod,
    build_method,
    check_config,
    check_method_sections,
    method_class,
    method_options,
    register,
)

__all__ = [
    "LABELS",
    "METHODS",
    "SUBSETS",
    "Need",
    "NoOptions",
    "TrainingMethod",
    "build_method",
    "check_config",
    "check_method_sections",
    "method_class",
    "method_options",
    "register",
]

# One file per method family: registering a new method needs no edit here.
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
