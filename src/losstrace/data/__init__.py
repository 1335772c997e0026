"""Data layer: sources, ingest, validation, fingerprint, featurization."""
