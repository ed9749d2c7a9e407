"""Test DAGs: a task that appends a line to the file named in ``conf["path"]``, one that fails,
one that sleeps (to have a task process running when the stack stops)."""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import dag, get_current_context, task


@dag(dag_id="stack_write_file", schedule=None, catchup=False, tags=["airflow_stack_test"])
def stack_write_file():
    @task
    def write_file() -> dict:
        ctx = get_current_context()
        path = Path(ctx["dag_run"].conf["path"])
        line = f"{ctx['run_id']} try={ctx['ti'].try_number}"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as fh:
            fh.write(line + "\n")
        return {"path": str(path), "try_number": ctx["ti"].try_number}

    write_file()


stack_write_file()


@dag(dag_id="stack_fail", schedule=None, catchup=False, tags=["airflow_stack_test"])
def stack_fail():
    @task(retries=0)
    def explode() -> None:
        raise ValueError("boom-from-stack-fail")

    explode()


stack_fail()


@dag(dag_id="stack_sleep", schedule=None, catchup=False, tags=["airflow_stack_test"])
def stack_sleep():
    @task
    def sleep_long() -> None:
        import time

        time.sleep(float(get_current_context()["dag_run"].conf.get("seconds", 300)))

    sleep_long()


stack_sleep()
