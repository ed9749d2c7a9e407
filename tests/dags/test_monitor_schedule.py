"""``monitoring.schedule``: the monitor DAG also runs on a cron, the same DAG file whatever the settings."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from tests.dags.schedules import parse_schedules

REPO = Path(__file__).resolve().parents[2]


def _parse(tmp_path: Path, monitoring: dict) -> dict:
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "include" / "conf", conf)
    raw = yaml.safe_load((conf / "dev.yaml").read_text())
    raw["monitoring"].update(monitoring)
    (conf / "dev.yaml").write_text(yaml.safe_dump(raw))
    parsed = parse_schedules(conf)
    return {"errors": parsed["errors"], **parsed["dags"]["monitor"]}


def test_the_monitor_runs_on_new_features_and_on_the_cron_when_one_is_set(mlops_home, tmp_path):
    plain = _parse(tmp_path / "plain", {})
    assert plain["errors"] == {} and plain["timetable"] == "AssetTriggeredTimetable"
    assert plain["assets"] == ["feature_snapshot"] and plain["cron"] is None
    cron = _parse(tmp_path / "cron", {"schedule": "0 6 * * *"})
    assert cron["errors"] == {} and cron["timetable"] == "AssetOrTimeSchedule"
    assert cron["assets"] == ["feature_snapshot"] and cron["cron"] == "0 6 * * *"
