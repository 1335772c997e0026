"""The four DVC stages, in pipeline order: ingest → validate → train → evaluate."""
