"""Run the real Airflow 3 components locally and drive them over REST (the demo and test harness).

- ``stack``: :class:`~mlops_demo.airflow_stack.stack.AirflowStack` starts, checks and stops the
  components on an isolated ``AIRFLOW_HOME``;
- ``stack_home``: that home's files (owner-only folders, ``airflow.cfg``, Fernet key, password);
- ``component_env``: the environment of every component (what passes from the caller, secrets);
- ``services``: a PostgreSQL database and a Redis database number per stack (the Celery stack's);
- ``distributed``: those plus the MLflow tracking server, and the CeleryExecutor stack on them;
- ``process_sessions``: finding and stopping every process of the components' sessions;
- ``rest_client``: :class:`~mlops_demo.airflow_stack.rest_client.AirflowClient` for the REST API v2;
- ``command_line``: ``python -m mlops_demo.airflow_stack up`` (what ``make up`` runs).
"""
