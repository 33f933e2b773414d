"""Connectors to the agency systems: one subpackage per system on a small shared base.

Each connector turns an Airflow connection (or explicit settings) into a client that yields batches;
DAG tasks call it and do nothing else.
"""
