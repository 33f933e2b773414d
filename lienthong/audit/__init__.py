"""The auditors' view: one report per pipeline run (figures, trends, findings), the store that lists the
reports, and the web app the Airflow plugin mounts."""
