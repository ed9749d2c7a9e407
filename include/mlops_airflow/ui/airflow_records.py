"""What the lifecycle view reads from Airflow's metadata database: asset events and pending approvals.

Both are turned into plain dicts for :func:`mlops_core.lifecycle_view.environment_view`. Runs in
the api-server (a request of :mod:`mlops_airflow.ui.app`), on the request's database session.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

#: Where the environment of an approval is recorded: the XCom of a task of the same run, and its key.
APPROVAL_ENV = {
    "evaluate_register": ("evaluate", "env"),  # make a version the champion of its environment
    "promote": ("plan", "to_env"),  # promote a champion into the next environment
}
EVENTS_PER_ASSET = 100


def asset_events(session: Session, asset_names: tuple[str, ...]) -> list[dict[str, Any]]:
    """The newest events of the assets named ``asset_names`` (up to :data:`EVENTS_PER_ASSET` each), newest first."""
    from airflow.models.asset import AssetEvent, AssetModel
    from sqlalchemy import select

    found: list[dict[str, Any]] = []
    for name in asset_names:
        rows = session.execute(
            select(AssetEvent)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.name == name)
            .order_by(AssetEvent.timestamp.desc(), AssetEvent.id.desc())
            .limit(EVENTS_PER_ASSET)
        ).scalars()
        found += [
            {
                "asset": name,
                "timestamp": e.timestamp.isoformat(timespec="seconds") if e.timestamp else None,
                "extra": dict(e.extra or {}),
                "dag_id": e.source_dag_id,
                "run_id": e.source_run_id,
            }
            for e in rows
        ]
    return sorted(found, key=lambda e: e["timestamp"] or "", reverse=True)


def pending_approvals(session: Session) -> list[dict[str, Any]]:
    """Approvals (Airflow HITL) still waiting for an answer, each with the environment it decides."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.state import State
    from sqlalchemy import select

    rows = session.execute(
        select(HITLDetail, TaskInstance)
        .join(TaskInstance, TaskInstance.id == HITLDetail.ti_id)
        # unanswered, and the task still waits (a timed-out approval's task has failed: nothing to answer)
        .where(HITLDetail.responded_at.is_(None), TaskInstance.state.in_(State.unfinished))
        .order_by(HITLDetail.created_at)
    ).all()
    return [
        {
            "env": _approval_env(session, ti.dag_id, ti.run_id),
            "subject": detail.subject,
            "dag_id": ti.dag_id,
            "run_id": ti.run_id,
            "task_id": ti.task_id,
            "map_index": ti.map_index,
            "created_at": detail.created_at.isoformat(timespec="seconds") if detail.created_at else None,
        }
        for detail, ti in rows
    ]


def _approval_env(session: Session, dag_id: str, run_id: str) -> str | None:
    where = APPROVAL_ENV.get(dag_id)
    if where is None:
        return None
    from airflow.models.xcom import XComModel

    task_id, key = where
    row = session.scalars(
        XComModel.get_many(run_id=run_id, dag_ids=dag_id, task_ids=task_id, key="return_value")
    ).first()
    value = XComModel.deserialize_value(row) if row is not None else None
    return str(value[key]) if isinstance(value, Mapping) and value.get(key) else None
