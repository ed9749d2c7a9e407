"""Parse one DAG file the way Airflow 3's dag-processor does, and report cost and imports.

The dag-processor imports the ``airflow.*`` modules a DAG file names once, before it forks a
child per parse; everything else the file imports (our packages and what they pull in) is
imported again on every parse. This probe does the same in a fresh interpreter: it pre-imports
the file's ``airflow.*`` imports, then times the execution of the file and lists which heavy
modules ended up in ``sys.modules``.

    python -m mlops_demo.parse_probe dags/train.py     # prints one JSON line
"""

from __future__ import annotations

import ast
import importlib
import json
import sys
import time
from pathlib import Path

HEAVY = ("pandas", "numpy", "scipy", "pyarrow", "sklearn", "mlflow", "evidently", "feast")


def airflow_imports(path: Path) -> list[tuple[str, list[str]]]:
    """Top-level ``airflow.*`` imports of the file: (module, names imported from it)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, list[str]]] = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.split(".")[0] == "airflow"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "airflow":
            found.append((node.module, [a.name for a in node.names]))
    return found


def pre_import(path: Path) -> None:
    """What the dag-processor holds before it forks a parse: its own modules, the file's airflow.* ones.

    ``airflow.sdk`` resolves its names lazily; resolving the names the file imports here counts
    them as Airflow's cost (the same for every DAG file, trivial or not), not as the file's.
    """
    importlib.import_module("airflow.dag_processing.processor")
    for module, names in airflow_imports(path):
        mod = importlib.import_module(module)
        for name in names:
            getattr(mod, name, None)


def probe(path: Path) -> dict:
    pre_import(path)
    before = set(sys.modules)
    start = time.perf_counter()
    code = compile(path.read_text(encoding="utf-8"), str(path), "exec")
    # Executing a DAG file of our own DAG folder is what the dag-processor does; this measures it.
    exec(code, {"__name__": f"unusual_prefix_{path.stem}", "__file__": str(path)})  # noqa: S102
    seconds = time.perf_counter() - start
    new = set(sys.modules) - before
    return {
        "file": path.name,
        "parse_seconds": round(seconds, 4),
        "heavy_modules": sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in HEAVY}),
        "modules_imported_per_parse": len(new),
    }


if __name__ == "__main__":
    print(json.dumps(probe(Path(sys.argv[1]))))
