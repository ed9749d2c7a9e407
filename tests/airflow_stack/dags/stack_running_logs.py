"""Test DAGs: a task that logs a marker and then keeps running, and one that logs and then defers,
so that the logs of unfinished tasks can be read while they are unfinished."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from airflow.providers.standard.sensors.time_delta import TimeDeltaSensor
from airflow.sdk import dag, get_current_context, task

log = logging.getLogger(__name__)


@dag(dag_id="stack_log_while_running", schedule=None, catchup=False, tags=["airflow_stack_test"])
def stack_log_while_running():
    @task
    def talk_then_sleep() -> None:
        log.info("marker-logged-before-sleeping")
        time.sleep(float(get_current_context()["dag_run"].conf.get("seconds", 30)))

    talk_then_sleep()


stack_log_while_running()


@dag(dag_id="stack_log_while_deferred", schedule=None, catchup=False, tags=["airflow_stack_test"])
def stack_log_while_deferred():
    # DateTimeTrigger logs "trigger starting" from the triggerer while the task is deferred.
    TimeDeltaSensor(task_id="wait_deferred", delta=timedelta(seconds=40), deferrable=True)


stack_log_while_deferred()
