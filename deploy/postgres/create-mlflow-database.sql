-- Run once by the postgres image on an empty data volume (docker-compose.yml): MLflow's store
-- lives in its own database on the same server, owned by the same user as Airflow's.
CREATE DATABASE mlflow OWNER airflow;
