"""Test DAG: scheduled by an AssetWatcher (the project's DropZoneWatcher) on the stack's drop zone.

The consumer returns what ingest would take from its triggering events (``paths_to_ingest`` of the
real watcher payloads), so the test sees exactly what Airflow handed over.
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetWatcher, dag, get_current_context, task

from mlops_airflow.triggers.files import DropZoneWatcher

WATCHED = Asset(
    name="stack_landed_files",
    uri="x-mlops://stack/landed",
    watchers=[AssetWatcher(name="stack_drop_zone", trigger=DropZoneWatcher(env="dev", poll_interval=0.5))],
)


@dag(dag_id="stack_watched", schedule=[WATCHED], catchup=False, tags=["airflow_stack_test"])
def stack_watched():
    @task
    def received() -> dict:
        from mlops_airflow.arrival import landed_paths
        from mlops_airflow.runtime import triggering_extras
        from mlops_core.settings import load_settings

        extras = triggering_extras(get_current_context(), WATCHED)
        paths, _ = landed_paths(extras, str(load_settings("dev").dataset.drop_zone))
        return {"paths": paths, "from_trigger": [bool(e.get("from_trigger")) for e in extras]}

    received()


stack_watched()
