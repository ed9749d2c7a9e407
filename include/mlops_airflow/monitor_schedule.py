"""When ``monitor`` runs: on every ``feature_snapshot`` event, and also on ``monitoring.schedule``.

With a cron set, the monitor also runs when no new data came (``AssetOrTimeSchedule``): it then
checks the newest dataset version again, the delayed labels that landed since, serving health,
and reports staleness (``mlops_core.decay.staleness``). Like ``arrival.ingest_schedule``, the
settings of ``$MLOPS_ENV`` are read when the DAG files are parsed. Importing this module is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlops_airflow.assets import FEATURES

if TYPE_CHECKING:
    from airflow.sdk import Asset, AssetOrTimeSchedule

    from mlops_core.settings import Settings


def monitor_schedule(settings: Settings | None = None) -> list[Asset] | AssetOrTimeSchedule:
    """``[FEATURES]``, or FEATURES events or the ``monitoring.schedule`` cron, whichever comes first."""
    if settings is None:
        from mlops_airflow.arrival import deployment_settings

        settings = deployment_settings()
    cron = settings.monitoring.schedule
    if cron is None:
        return [FEATURES]
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(cron, timezone="UTC"), assets=FEATURES)
