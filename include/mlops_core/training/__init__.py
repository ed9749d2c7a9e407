"""Training: the model pipeline (``model``) and the entrypoint every backend runs (``entrypoint``).

Importing this package is cheap; scikit-learn loads when a name is first used::

    from mlops_core.training import build_pipeline, run_training

The entrypoint runs as ``python -m mlops_core.training.entrypoint`` (see its docstring).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "ALGORITHMS": "model",
    "SKOPS_TRUSTED_TYPES": "model",
    "UntrustedModelError": "model",
    "build_pipeline": "model",
    "cast_features": "model",
    "check_trusted_types": "model",
    "coerce_hyperparameter": "model",
    "compute_metrics": "model",
    "load_model": "model",
    "load_skops_pipeline": "model",
    "model_features": "model",
    "prepare_features": "model",
    "prepare_target": "model",
    "resolve_hyperparameters": "model",
    "save_model": "model",
    "TrainingInputError": "entrypoint",
    "TrainingPaths": "entrypoint",
    "prepare_ml_root": "entrypoint",
    "run_training": "entrypoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
