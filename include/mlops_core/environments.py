"""The deployment environments, defined once, in promotion order (a champion moves left to right).

Standard library only: DAG files import this (through ``mlops_airflow.dag_defaults``) on every
parse, so it must not pull in pydantic, YAML or the settings loader.
"""

from __future__ import annotations

import os

#: Every environment, in promotion order: ``dev`` -> ``staging`` -> ``prod``. Each has its
#: settings file ``include/conf/<env>.yaml``.
ENVIRONMENTS: tuple[str, ...] = ("dev", "staging", "prod")

#: The variable that names the environment of a deployment, and its value when unset.
ENV_VARIABLE = "MLOPS_ENV"
DEFAULT_ENV = "dev"


def current_env() -> str:
    """The deployment's environment: ``$MLOPS_ENV``, or ``dev`` when it is unset (not validated here)."""
    return os.environ.get(ENV_VARIABLE, DEFAULT_ENV)


def later_environments(env: str) -> tuple[str, ...]:
    """The environments a champion of ``env`` may be promoted to (those after it), e.g. ``staging`` -> ``("prod",)``.

    Raises ``ValueError`` for a name that is not one of :data:`ENVIRONMENTS`.
    """
    if env not in ENVIRONMENTS:
        raise ValueError(f"unknown environment {env!r}; expected one of {', '.join(map(repr, ENVIRONMENTS))}")
    return ENVIRONMENTS[ENVIRONMENTS.index(env) + 1 :]
