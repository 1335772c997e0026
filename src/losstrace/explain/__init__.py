"""Pure analysis of recorded runs: curve symptoms, diagnosis, diffs and their reports (no MLflow, TensorFlow or subprocess)."""
