"""Demo, test harness and deployment tools.

- ``airflow_stack``: run the real Airflow 3 components locally (``make up``);
- ``mlflow_server``: an MLflow tracking server with its UI on a given store (``make up``, the
  distributed stack);
- ``fab_admin``: the first FAB admin user from the environment (the compose stack's init);
- ``ship``: copy ``dags/``, ``include/`` and ``plugins/`` to an environment (``make ship``, CI/CD);
- ``run``: ``make demo``.
"""
