"""Winback: a retention pipeline for online shops on Apache Airflow.

Ingest orders and site visits, validate them, build retention segments in a warehouse
and keep marketing audiences in sync. See the README for the configuration and CLI.
"""

__version__ = "0.1.0"
