"""The run record: its contract (names, columns, keys, tags), writing a run to MLflow, reading it back, sync."""
