# Winback's Airflow image: the official Apache Airflow image plus Winback's pinned
# runtime dependencies. docker-compose.yaml builds it (`docker compose build`);
# rebuild after changing requirements.txt or constraints.txt.
#
# The base tag must agree with the project: its Airflow version with the
# apache-airflow pin in requirements.txt, its Python with requires-python in
# pyproject.toml (tests/test_docker_compose.py checks both).
#
# DAGs, the winback package (plugins/) and include/ are not baked in: the compose
# file mounts them from the repository, so code changes need no rebuild.
FROM apache/airflow:3.3.2-python3.11

# Install as the airflow user, the way the official image expects extensions to
# be installed (into its ~/.local environment, never as root).
USER airflow

COPY --chown=airflow:0 requirements.txt constraints.txt /opt/winback/

# requirements.txt pins apache-airflow to the base image's version, so pip keeps
# the image's Airflow; constraints.txt is the project's full lock.
RUN pip install --no-cache-dir \
        -r /opt/winback/requirements.txt \
        -c /opt/winback/constraints.txt
