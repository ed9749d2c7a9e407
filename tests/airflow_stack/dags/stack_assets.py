"""Test DAGs: a producer updates an asset with metadata; a consumer is scheduled on that asset.

A pair consumer waits for that asset and a second one (``stack_pair_producer``): its queued events.
"""

from __future__ import annotations

from airflow.sdk import Asset, dag, get_current_context, task

STACK_ASSET = Asset(name="stack_test_dataset", uri="file:///tmp/airflow-stack-test/dataset")


@dag(dag_id="stack_producer", schedule=None, catchup=False, tags=["airflow_stack_test"])
def stack_producer():
    @task(outlets=[STACK_ASSET])
    def produce() -> str:
        ctx = get_current_context()
        version = ctx["dag_run"].conf.get("version", "v0")
        ctx["outlet_events"][STACK_ASSET].extra = {"version": version, "rows": 3}
        return version

    produce()


stack_producer()


@dag(dag_id="stack_consumer", schedule=[STACK_ASSET], catchup=False, tags=["airflow_stack_test"])
def stack_consumer():
    @task
    def consume() -> list[dict]:
        ctx = get_current_context()
        return [dict(event.extra) for event in ctx["triggering_asset_events"][STACK_ASSET]]

    consume()


stack_consumer()


STACK_PAIR_ASSET = Asset(name="stack_pair_dataset", uri="file:///tmp/airflow-stack-test/pair")


@dag(dag_id="stack_pair_producer", schedule=None, catchup=False, tags=["airflow_stack_test"])
def stack_pair_producer():
    @task(outlets=[STACK_PAIR_ASSET])
    def produce_pair() -> None:
        pass

    produce_pair()


stack_pair_producer()


@dag(dag_id="stack_pair_consumer", schedule=STACK_ASSET & STACK_PAIR_ASSET, catchup=False, tags=["airflow_stack_test"])
def stack_pair_consumer():
    """Runs once both assets were updated: an event of only one of them waits in the queue."""

    @task
    def consume_pair() -> None:
        pass

    consume_pair()


stack_pair_consumer()
