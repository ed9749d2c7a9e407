"""Demo and test harness: run the real Airflow 3 components locally (see ``airflow_stack``)."""
