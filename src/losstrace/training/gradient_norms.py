"""Per-layer gradient norms of every training step, and weight-update ratios per epoch.

Vanishing or exploding gradients and a learning rate too small or too large for a layer
show up there first. The norms are taken where the optimizer receives the gradients,
inside Keras' compiled train step (see `GradientNorms`), instead of by an extra forward
and backward pass over a fixed probe batch: that pass needed a second graph traced
(~0.25 s) and cost ~5 ms per epoch, 10% of the default Japanese Vowels training on its own.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from losstrace.training import step_hook


class GradientNorms:
    """Each layer's gradient norm at every training step, accumulated inside the train graph.

    For the length of a fit, a `step_hook` runs before each optimizer update: it adds each
    layer's squared gradient norm to a running sum and maximum held in a variable. The
    callback reads it once per epoch, so a step costs a few reductions and no host round
    trip. The hook is removed at train end, so the saved optimizer is the plain Keras one.

    Under tf.distribute the optimizer sees each replica's local gradients, on its share of
    the batch and scaled by 1/replicas (Keras divides each replica's loss so the sum is the
    global mean): they are scaled back, so a figure is the mean over replica-steps of a
    replica's own gradient norm, read on the chief.
    """

    def __init__(self, model, layers: list) -> None:
        import tensorflow as tf

        self._replicas = float(model.distribute_strategy.num_replicas_in_sync)
        self._layer_of = {id(v): i for i, layer in enumerate(layers) for v in layer.trainable_weights}
        self._n = n = len(layers)
        # One plain host variable, deliberately outside any distribution scope: replicas add
        # to it locally (no cross-replica traffic per step) and the chief reads its own.
        # Layout: [sum of squared norms (n), max squared norm (n), steps]: one read and one
        # reset an epoch.
        self._acc = tf.Variable(tf.zeros(2 * n + 1, tf.float64), trainable=False)
        self.detach = step_hook.on_apply(model, self._record)

    def _record(self, grads, variables) -> None:
        import tensorflow as tf

        if variables is None:
            return
        parts: list[list] = [[] for _ in range(self._n)]
        for g, v in zip(grads, variables):
            i = self._layer_of.get(id(v))
            if g is not None and i is not None:
                parts[i].append(_squared_norm(g))
        squares = tf.stack([tf.add_n(p) if p else tf.constant(0.0, tf.float64) for p in parts])
        squares = squares * self._replicas**2  # undo Keras' 1/replicas loss scaling
        # Scatter ops lock the variable, so replicas adding at once lose no update.
        n = self._n
        sums = tf.range(n), tf.range(2 * n, 2 * n + 1)  # the sums' slots and the steps' slot
        self._acc.scatter_add(tf.IndexedSlices(tf.concat([squares, tf.ones(1, tf.float64)], 0), tf.concat(sums, 0)))
        self._acc.scatter_max(tf.IndexedSlices(squares, tf.range(n, 2 * n)))

    def reset(self) -> None:
        self._acc.assign(np.zeros(self._acc.shape, np.float64))

    def read(self) -> tuple[list[float], list[float]]:
        """(root mean square, max) of the per-step norms since the last reset, per layer."""
        acc, n = self._acc.numpy(), self._n
        steps = float(acc[2 * n])
        if steps == 0:
            return [math.nan] * n, [math.nan] * n
        return ([math.sqrt(s / steps) for s in acc[:n]], [math.sqrt(m) for m in acc[n : 2 * n]])


def _squared_norm(g):
    import tensorflow as tf

    if isinstance(g, tf.IndexedSlices):  # embeddings: sum the rows of repeated ids first
        ids, pos = tf.unique(g.indices)
        g = tf.math.unsorted_segment_sum(g.values, pos, tf.shape(ids)[0])
    return tf.reduce_sum(tf.square(tf.cast(g, tf.float64)))


class LayerDynamics:
    """Per layer and epoch: RMS and max gradient norm over the epoch's steps, and ||Δw|| / ||w||."""

    def __init__(self, model) -> None:
        self.model = model
        self.layers = [layer for layer in model.layers if layer.trainable_weights]
        # Before the first step: Keras traces its train step lazily.
        self.norms = GradientNorms(model, self.layers)
        self._start: dict[str, list[np.ndarray]] | None = None
        self._end: dict[str, list[np.ndarray]] | None = None

    def begin_epoch(self) -> None:
        # Last epoch's end is this epoch's start: nothing touches the weights in between
        # (callbacks restore them at train begin or end), so copy them once per epoch.
        self._start = self._end or self._weights()
        self.norms.reset()

    def rows(self, epoch: int) -> list[dict]:
        rms, peak = self.norms.read()
        end = self._end = self._weights()
        rows = []
        for i, (name, now) in enumerate(end.items()):
            before = self._start.get(name) if self._start else None
            rows.append(
                {
                    "epoch": epoch,
                    "layer": name,
                    "grad_norm": rms[i],
                    "grad_norm_max": peak[i],
                    "update_ratio": _update_ratio(before, now),
                }
            )
        return rows

    def detach(self) -> None:
        self.norms.detach()

    def _weights(self) -> dict[str, list[np.ndarray]]:
        return {layer.name: [keras.ops.convert_to_numpy(w) for w in layer.trainable_weights] for layer in self.layers}


def _update_ratio(before: list[np.ndarray] | None, now: list[np.ndarray]) -> float:
    if before is None:
        return math.nan
    w = math.sqrt(sum(float(np.sum(np.square(b, dtype=np.float64))) for b in before))
    dw = math.sqrt(sum(float(np.sum(np.square(a.astype(np.float64) - b))) for a, b in zip(now, before)))
    return dw / w if w > 0 else math.nan
