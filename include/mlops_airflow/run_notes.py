"""A one-line outcome of each lifecycle run, shown as the run's note in the Airflow UI.

A run that ends green can still carry news a user must see: every delivered file was quarantined,
the promotion gate kept the champion, a deploy rolled back. Tasks record that line with
:func:`record_note` (an XCom under :data:`NOTE_KEY`, written at once through the Execution API, so it
survives a failing task); when the run finishes, :func:`on_dag_run_success` /
:func:`on_dag_run_failed` (a listener the project's plugin registers, running in the scheduler)
copy the lines into the run's note, unless somebody already wrote one. The run list and the run's
page then say what happened without opening a log.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow.listeners import hookimpl

if TYPE_CHECKING:
    from airflow.models.dagrun import DagRun
    from airflow.sdk import Context

log = logging.getLogger(__name__)

NOTE_KEY = "mlops_run_note"
MAX_NOTE = 1000  # the dag_run_note column's size


def record_note(context: Context, text: str) -> None:
    """Record ``text`` as this task's line of the run's note (and log it)."""
    log.info("Run outcome: %s", text)
    context["ti"].xcom_push(key=NOTE_KEY, value=text[:MAX_NOTE])


def note_text(lines: list[Any]) -> str | None:
    """The note for a run from its tasks' recorded lines (None when there are none)."""
    texts = [str(line).strip() for line in lines if line]
    return " | ".join(texts)[:MAX_NOTE] if texts else None


def _apply_note(dag_run: DagRun) -> None:
    from airflow.models.xcom import XComModel
    from sqlalchemy.orm import object_session

    session = object_session(dag_run)
    if session is None or dag_run.note:  # never overwrite a note somebody wrote
        return
    rows = session.scalars(XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id, key=NOTE_KEY)).all()
    text = note_text([XComModel.deserialize_value(row) for row in rows])
    if text:
        dag_run.note = text


@hookimpl
def on_dag_run_success(dag_run: DagRun, msg: str) -> None:
    """Scheduler side: copy the recorded outcome into the note of a finished run."""
    _apply_note(dag_run)


@hookimpl
def on_dag_run_failed(dag_run: DagRun, msg: str) -> None:
    """Scheduler side: a failed run gets its recorded outcome as a note too."""
    _apply_note(dag_run)
