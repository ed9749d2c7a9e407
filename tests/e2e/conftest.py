"""One Airflow stack for every lifecycle of the session (the project's rule: one stack per session).

Each lifecycle module runs :class:`mlops_demo.run.LifecycleDemo` on this stack: the demo gives the
stack its environment (its own ``MLOPS_HOME``, conf folder, connections) by restarting every
component but the api-server with it, and its client sees only its own pass's runs and asset events.
So the two lifecycles share the start of Airflow but nothing they assert.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def lifecycle_stack(tmp_path_factory):
    from mlops_demo.run import lifecycle_stack

    stack = lifecycle_stack(tmp_path_factory.mktemp("e2e-airflow") / "airflow")
    try:
        yield stack
    finally:
        stack.stop()
