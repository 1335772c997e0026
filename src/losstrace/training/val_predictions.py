"""Validation prediction statistics gathered by Keras' own validation pass, at no extra pass.

The diagnosis needs to know how confident and how varied the validation predictions
are (saturated outputs, a collapse onto one class). Predicting the validation set again
after fit costs a forward pass run op by op (or a newly traced predict function):
~0.1-0.2 s for a small LSTM, several percent of a short training. Keras already runs
the model over the validation set every epoch; this hooks that pass. For the length of
a fit, the model's `test_step` and `compute_metrics` are wrapped on the instance, so
while a test step is traced the predictions it computes are also summed into one
variable: rows, summed top probability, rows above 0.99, pinned outputs, summed outputs
(what a row adds up to) and predicted class counts. The callback resets the sums when an evaluation begins and reads them
once at the end. Figures are those of `run_files.prediction_stats` on the same rows.
"""

from __future__ import annotations

from typing import Any

# Layout of the sums: [rows, sum of top probability, rows whose top > 0.99,
# pinned outputs (p > 0.99 or p < 0.01), outputs, sum of all outputs, class 0 count, class 1 count, ...].
_FIXED = 6


class ValidationPredictions:
    """Sums over the predictions of the latest evaluation inside fit (see the module doc)."""

    def __init__(self, model, n_outputs: int, from_logits: bool, multilabel: bool) -> None:
        import tensorflow as tf

        self.model, self.from_logits, self.multilabel = model, from_logits, multilabel
        self.n_top = 2 if n_outputs == 1 else n_outputs
        self.sums = tf.Variable(tf.zeros(_FIXED + self.n_top, tf.float64), trainable=False)
        self._in_test = False
        test_step, compute_metrics = model.test_step, model.compute_metrics

        def wrapped_test_step(data):
            self._in_test = True  # read while the step is traced
            try:
                return test_step(data)
            finally:
                self._in_test = False

        def wrapped_compute_metrics(x, y, y_pred, sample_weight=None):
            if self._in_test:
                self._add(y_pred)
            return compute_metrics(x, y, y_pred, sample_weight)

        model.test_step, model.compute_metrics = wrapped_test_step, wrapped_compute_metrics
        # A test step traced before (a model evaluated or fitted earlier) lacks the hook.
        model.make_test_function(force=True)

    def _add(self, y_pred) -> None:
        import tensorflow as tf

        if not tf.is_tensor(y_pred) or y_pred.shape.rank != 2:
            return  # several outputs, or an unusual shape: the eager pass after fit covers it
        p = tf.cast(y_pred, tf.float64)
        if self.from_logits:
            p = tf.sigmoid(p) if (self.multilabel or p.shape[1] == 1) else tf.nn.softmax(p, axis=1)
        top = tf.concat([1.0 - p, p], axis=1) if p.shape[1] == 1 else p
        best = tf.reduce_max(top, axis=1)
        rows = tf.cast(tf.shape(p)[0], tf.float64)
        pinned = tf.reduce_sum(tf.cast((p > 0.99) | (p < 0.01), tf.float64))
        counts = tf.reduce_sum(tf.one_hot(tf.argmax(top, axis=1), self.n_top, dtype=tf.float64), axis=0)
        fixed = tf.stack(
            [
                rows,
                tf.reduce_sum(best),
                tf.reduce_sum(tf.cast(best > 0.99, tf.float64)),
                pinned,
                rows * tf.cast(tf.shape(p)[1], tf.float64),
                tf.reduce_sum(p),
            ]
        )
        self.sums.assign_add(tf.concat([fixed, counts], 0))

    def reset(self) -> None:
        """A new evaluation begins: only its rows count."""
        self.sums.assign(self.sums * 0.0)

    def stats(self, names: list[str]) -> dict[str, Any] | None:
        """`run_files.prediction_stats` of the latest evaluation, None if none was seen."""
        s = self.sums.numpy()
        rows = float(s[0])
        if rows == 0:
            return None
        shares = s[_FIXED:] / rows
        out = {
            "mean_max_prob": float(s[1] / rows),
            "max_prob_share_above_0_99": float(s[2] / rows),
            "pinned_output_share": float(s[3] / s[4]),
            "pred_class_shares": {
                names[i] if i < len(names) else str(i): round(float(v), 6) for i, v in enumerate(shares)
            },
        }
        if s[4] > rows:  # more than one output a row: what a row adds up to
            out["mean_output_sum"] = float(s[5] / rows)
        return out

    def detach(self) -> None:
        """Back to the model's own methods; a later evaluate traces a step without the hook."""
        for name in ("test_step", "compute_metrics"):
            self.model.__dict__.pop(name, None)
        self.model.test_function = None
