#!/bin/bash
# Runs a Spark standalone daemon (`spark-class <main class> <args>`) in the official Spark image as the
# platform's own user (docker-compose gives the Spark worker Airflow's uid: the linkage's scratch folder on the
# shared data volume is private to that user, and executors read and write it).
#
# Such a uid has no entry in the image's /etc/passwd, and the JVM's login (Hadoop's UserGroupInformation) then
# fails on a user without a name. The image's own entrypoint fakes an entry with nss_wrapper, but only for its
# Kubernetes driver and executor modes; this does the same for a standalone daemon and the executors it starts.
set -euo pipefail

if ! getent passwd "$(id -u)" >/dev/null 2>&1; then
  for wrapper in /usr/lib/*/libnss_wrapper.so /usr/lib/libnss_wrapper.so /lib/*/libnss_wrapper.so; do
    if [ -s "$wrapper" ]; then
      NSS_WRAPPER_PASSWD="$(mktemp)"
      NSS_WRAPPER_GROUP="$(mktemp)"
      cat /etc/passwd >"$NSS_WRAPPER_PASSWD"
      printf 'lienthong:x:%s:%s:lienthong:/tmp:/bin/false\n' "$(id -u)" "$(id -g)" >>"$NSS_WRAPPER_PASSWD"
      cat /etc/group >"$NSS_WRAPPER_GROUP"
      export LD_PRELOAD="$wrapper" NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
      break
    fi
  done
fi
export SPARK_USER="${SPARK_USER:-lienthong}"

exec "${SPARK_HOME:-/opt/spark}/bin/spark-class" "$@"
