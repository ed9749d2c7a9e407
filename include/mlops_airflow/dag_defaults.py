"""Conventions every lifecycle DAG shares: owner, retries with backoff, timeouts, common Params.

Light on purpose: DAG files import this on every parse, so it imports only ``airflow.sdk``, the
standard library and ``mlops_core.environments`` (standard library only).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param

from mlops_core.environments import ENVIRONMENTS as _ENVIRONMENTS
from mlops_core.environments import current_env, later_environments

ENVIRONMENTS = list(_ENVIRONMENTS)  # a Param enum is a JSON list
PROMOTABLE = [env for env in ENVIRONMENTS if later_environments(env)]  # environments with a next one
START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")

DEFAULT_ARGS = {
    "owner": "mlops",
    "retries": 2,
    "retry_delay": timedelta(seconds=20),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
    "execution_timeout": timedelta(minutes=30),
}


def env_param() -> Param:
    """Which environment's settings (``include/conf/<env>.yaml``) a run uses."""
    return Param(
        current_env(),
        type="string",
        enum=ENVIRONMENTS,
        title="Environment",
        description="Settings file include/conf/<env>.yaml; defaults to $MLOPS_ENV of the deployment.",
    )


def use_the_settings(setting: str) -> dict[str, str]:
    """``values_display`` of an optional enum Param: its empty choice reads "use the settings (<setting>)".

    The Airflow form labels an option by ``values_display[str(value)]``, and ``None`` by the key ``"null"``.
    """
    return {"null": f"use the settings ({setting})"}


def on_failed_run(context) -> None:
    """Every lifecycle DAG's ``on_failure_callback``: alert on the run's environment's channels (``alerts:``).

    Airflow 3 runs it in the dag processor; the work (and its imports) is in ``mlops_airflow.alerts``,
    imported only when a run failed. It never raises: a bad setting or connection is a logged error.
    """
    from mlops_airflow.alerts import notify_failed_run

    notify_failed_run(context)
