# The platform image: the official Apache Airflow 3.3 image plus this project (core library, connectors,
# sandbox) installed from the repository's own files.
FROM apache/airflow:3.3.2-python3.11

# The Spark version of the cluster in docker-compose.yml (its `spark-master` / `spark-worker` image tag): the
# Spark linkage engine's driver runs inside the Celery worker's task, and a driver should match its cluster.
ARG SPARK_VERSION=4.0.1

# Java 17 for that driver (pyspark starts a JVM); the Spark image runs Java 17 too. The man directory is made
# first: Debian's slim images leave it out, and the JRE's post-install links its man pages there.
USER root
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && apt-get autoremove -yqq --purge \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /opt/lienthong/var \
    && chown airflow:0 /opt/lienthong /opt/lienthong/var

USER airflow
WORKDIR /opt/lienthong
COPY --chown=airflow:0 pyproject.toml README.md ./
COPY --chown=airflow:0 lienthong ./lienthong
COPY --chown=airflow:0 connectors ./connectors
COPY --chown=airflow:0 sandbox ./sandbox
COPY --chown=airflow:0 schemas ./schemas
COPY --chown=airflow:0 config ./config
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" "pyspark==${SPARK_VERSION}" -e .
COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 plugins /opt/airflow/plugins
