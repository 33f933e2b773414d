# The platform image: the official Apache Airflow 3.3 image plus this project (core library, connectors,
# sandbox) installed from the repository's own files.
FROM apache/airflow:3.3.2-python3.11

USER airflow
WORKDIR /opt/lienthong
COPY --chown=airflow:0 pyproject.toml README.md ./
COPY --chown=airflow:0 lienthong ./lienthong
COPY --chown=airflow:0 connectors ./connectors
COPY --chown=airflow:0 sandbox ./sandbox
COPY --chown=airflow:0 schemas ./schemas
COPY --chown=airflow:0 config ./config
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -e .
COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 plugins /opt/airflow/plugins
