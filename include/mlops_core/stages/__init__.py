"""One module per lifecycle stage: plain functions that DAG tasks call.

Each takes the environment's :class:`~mlops_core.settings.Settings` plus primitives, does the
stage's work through the configured backends, and returns a JSON-safe dict that becomes the task's
XCom and the metadata of the asset event it emits. No Airflow here: every stage runs (and is
tested) without a scheduler.
"""
