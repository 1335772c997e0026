"""How the MLflow UI opens losstrace's experiment: on its training runs.

MLflow 3's UI picks an experiment's page from the tag `mlflow.experimentKind`: without it
the UI guesses, and an experiment it cannot place opens on the GenAI overview (traces,
token usage, an issue-detection prompt), none of which a training pipeline writes.
`custom_model_development` is the kind the UI opens on the Runs table, as the README's
"Comparing runs" describes.
"""

from __future__ import annotations

from typing import Any

KIND_TAG = "mlflow.experimentKind"
KIND = "custom_model_development"
TAGS = {KIND_TAG: KIND}


def ensure_runs_view(c: Any, experiment: Any) -> None:
    """Tag an experiment created before losstrace set the kind; a kind already chosen (by a
    user in the UI, or by another tool) is left alone."""
    if KIND_TAG not in (experiment.tags or {}):
        c.set_experiment_tag(experiment.experiment_id, KIND_TAG, KIND)
