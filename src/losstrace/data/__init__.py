"""Data layer: sources and file formats, data checks, fingerprint, featurization."""
