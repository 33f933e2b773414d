-- The warehouse lives beside the Airflow metadata database, in its own database.
CREATE DATABASE warehouse;
