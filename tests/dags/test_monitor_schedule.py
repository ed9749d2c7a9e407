"""``monitoring.schedule``: the monitor DAG also runs on a cron, the same DAG file whatever the settings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
monitor = bag.dags["monitor"]
timetable = monitor.timetable
def flat(cond):
    return [a for o in cond.objects for a in flat(o)] if hasattr(cond, "objects") else [cond]
print(json.dumps({
    "errors": {k: v[-300:] for k, v in bag.import_errors.items()},
    "timetable": type(timetable).__name__,
    "cron": getattr(getattr(timetable, "timetable", None), "expression", None),
    "assets": [a.name for a in flat(timetable.asset_condition)] if hasattr(timetable, "asset_condition") else [],
}))
"""


def _parse(tmp_path: Path, monitoring: dict) -> dict:
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "include" / "conf", conf)
    raw = yaml.safe_load((conf / "dev.yaml").read_text())
    raw["monitoring"].update(monitoring)
    (conf / "dev.yaml").write_text(yaml.safe_dump(raw))
    env = {**os.environ, "MLOPS_CONF_DIR": str(conf), "MLOPS_ENV": "dev", "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(REPO / "dags")], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_monitor_runs_on_new_features_and_on_the_cron_when_one_is_set(mlops_home, tmp_path):
    plain = _parse(tmp_path / "plain", {})
    assert plain["errors"] == {} and plain["timetable"] == "AssetTriggeredTimetable"
    assert plain["assets"] == ["feature_snapshot"] and plain["cron"] is None
    cron = _parse(tmp_path / "cron", {"schedule": "0 6 * * *"})
    assert cron["errors"] == {} and cron["timetable"] == "AssetOrTimeSchedule"
    assert cron["assets"] == ["feature_snapshot"] and cron["cron"] == "0 6 * * *"
