"""How the DAG files schedule their DAGs under a given settings folder: parsed in a fresh interpreter.

The settings are read when the DAG files are parsed (``dataset.arrival.via``, ``monitoring.schedule``),
so each settings folder needs its own parse: :func:`parse_schedules` runs Airflow's ``DagBag`` on
``dags/`` with ``MLOPS_CONF_DIR`` pointing at the folder and reports, per DAG, its timetable, the
cron of an ``AssetOrTimeSchedule``, the assets it waits for and their watchers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag

def flat(cond):
    if cond is None:
        return []
    return [a for o in cond.objects for a in flat(o)] if hasattr(cond, "objects") else [cond]

bag = DagBag(dag_folder=sys.argv[1])
dags = {}
for dag_id, dag in bag.dags.items():
    timetable = dag.timetable
    assets = [a for a in flat(getattr(timetable, "asset_condition", None)) if hasattr(a, "name")]
    dags[dag_id] = {
        "timetable": type(timetable).__name__,
        "cron": getattr(getattr(timetable, "timetable", None), "expression", None),
        "assets": [a.name for a in assets],
        "watchers": [[w.name, type(w.trigger).__name__] for a in assets for w in getattr(a, "watchers", [])],
    }
print(json.dumps({"errors": {k: v[-300:] for k, v in bag.import_errors.items()}, "dags": dags}))
"""


def parse_schedules(conf: Path, env: str = "dev") -> dict[str, Any]:
    """``{"errors": {file: text}, "dags": {dag_id: {timetable, cron, assets, watchers}}}`` under ``conf``."""
    environ = {**os.environ, "MLOPS_CONF_DIR": str(conf), "MLOPS_ENV": env, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(REPO / "dags")], env=environ, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
