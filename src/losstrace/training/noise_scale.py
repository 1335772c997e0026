"""The gradient noise scale B_simple = tr(Σ) / |G|², measured during training.

McCandlish et al. (2018), "An Empirical Model of Large-Batch Training": below B_simple a
larger batch takes proportionally fewer steps for the same progress; far above it, a
larger batch buys almost nothing. Measured, it says whether a noisy loss comes from a
batch too small for the problem, instead of guessing that from the loss scatter.

The estimator is the paper's two-batch-size one (its appendix A.1), without per-example
gradients. Every `every` steps, the step's batch of B rows is split into k micro-batches
of b = B // k rows, and each micro-batch gradient g_i is taken at the step's weights.
Since E|g_n|² = |G|² + tr(Σ)/n for a batch of n rows, |g_small|² = mean_i |g_i|² (size b)
and |g_big|² = |mean_i g_i|² (size kb) give unbiased

    |G|²   ≈ (kb |g_big|² - b |g_small|²) / (kb - b)
    tr(Σ)  ≈ (|g_small|² - |g_big|²) / (1/b - 1/(kb))

(with the finite-training-set terms of `estimates`). Both are summed over an epoch and
divided only then (a ratio of means, as the paper advises: one estimate is noisy and |G|²
can come out negative). g_big is built from the same micro-batch gradients, so |G|
cancels exactly out of tr(Σ) (for k = 2, tr(Σ) ≈ b/2 |g_1 - g_2|² and |G|² ≈ g_1·g_2).

How, cheaply: the micro-batches go through the model's own compiled train step, the one
Keras already traced, with the optimizer update held back: the optimizer's `apply` is
wrapped (as `gradient_norms.GradientNorms` does) so that, while a measurement runs, it
adds each micro-batch's gradient into a buffer instead of applying it. No second graph
is traced: tracing a separate forward and backward pass of the default LSTM, or a branch
for it inside the train step, cost 0.6-2 s of CPU once per fit, as much as its 30 epochs
of training. A measurement costs k micro-batch steps (on a CPU a recurrent step over
half a small batch costs nearly a whole one) and a copy of the small state a step
changes besides the weights (dropout seed state, normalisation statistics, metric
variables, the step counter), which is put back before the real step runs on the whole
batch: the training is the one it would be without the measurement, update for update
(tested).

Measured only on one device with one step per call (`steps_per_execution` 1, no
tf.distribute replicas) and dense batches; elsewhere the fit runs unmeasured. Keras'
micro-batches are random halves of a shuffled batch; under `train.batching: bucket` a
batch holds rows of similar length, so the figure is the noise within a length bucket.
"""

from __future__ import annotations

import math

import numpy as np

MICRO_BATCHES = 2  # k: halves, so each micro-batch keeps as many rows as possible


class NoiseScale:
    """B_simple measured every `every` train-function calls, summed per epoch.

    For the length of a fit, `model.train_function` (what Keras' fit loop calls once per
    step) and the innermost optimizer's `apply` are wrapped on their instances. A due
    call takes the step's batch from the iterator, runs each micro-batch through the
    compiled step in capture mode, restores the state, then runs the real step on the
    batch. `detach()` removes both wrappers and switches capture off for good.
    """

    def __init__(self, model, every: int, rows: int | None = None, micro_batches: int = MICRO_BATCHES) -> None:
        import tensorflow as tf

        if every < 1 or micro_batches < 2:
            raise ValueError(f"noise scale every={every} must be >= 1 and micro_batches={micro_batches} >= 2")
        self.model, self.every, self.k = model, int(every), int(micro_batches)
        self.rows = rows  # the training set's rows, for `estimates`' finite-sample terms; None: unknown
        opt = model.optimizer
        while hasattr(opt, "inner_optimizer"):  # LossScaleOptimizer: the inner one gets unscaled gradients
            opt = opt.inner_optimizer
        self._opt = opt
        self.enabled = model.steps_per_execution == 1 and model.distribute_strategy.num_replicas_in_sync == 1
        self._calls = 0
        self.measurements = 0  # over the whole fit
        self._replay: _Replay | None = None
        # 0: steps apply their gradient as usual; 1: the first micro-batch; 2: a later one.
        self._mode = tf.Variable(0, dtype=tf.int32, trainable=False)
        weights = model.trainable_variables
        self._index = {id(v): i for i, v in enumerate(weights)}
        self._buffer = [tf.Variable(tf.zeros(v.shape, tf.float64), trainable=False) for v in weights]
        self._squares = tf.Variable(tf.zeros((), tf.float64), trainable=False)  # sum_i |g_i|²
        self._captures = tf.Variable(0, dtype=tf.int64, trainable=False)  # micro-batches captured
        self._sums = np.zeros(3)  # tr(Σ) estimates, |G|² estimates, measurements
        # Keras traces its train step at the first call: a function built by an earlier
        # fit would not route apply through the wrapper, so build a fresh one.
        model.make_train_function(force=True)
        self._function = model.train_function
        apply_fn = opt.apply

        def apply(grads, trainable_variables=None):
            if trainable_variables is None:  # apply(grads) pairs them with the model's own
                return apply_fn(grads, trainable_variables)
            grads, variables = list(grads), list(trainable_variables)
            return tf.cond(
                self._mode > 0,
                lambda: self._capture(grads, variables),
                lambda: _returning_nothing(apply_fn, grads, variables),
            )

        opt.apply = apply
        model.train_function = self._train_function

    # ------------------------------------------------------------- in the train step

    def _capture(self, grads, variables):
        """Add one micro-batch gradient to the buffer (the first one replaces it)."""
        import tensorflow as tf

        first = tf.equal(self._mode, 1)
        squares = []
        for g, v in zip(grads, variables):
            i = self._index.get(id(v))
            if g is None or i is None:
                continue
            g = _dense(g)
            squares.append(tf.reduce_sum(tf.square(g)))
            buf = self._buffer[i]
            buf.assign(tf.where(first, g, buf + g))
        total = tf.add_n(squares) if squares else tf.constant(0.0, tf.float64)
        self._squares.assign(tf.where(first, total, self._squares + total))
        self._captures.assign_add(1)
        return tf.constant(0)

    # ------------------------------------------------------------- around the step

    def _train_function(self, iterator):
        import tensorflow as tf

        self._calls += 1
        # Never on a fit's first call: Keras builds the compiled metrics while it traces
        # the step there, so their variables would not be in the state put back.
        if not self.enabled or self._calls % self.every or self._calls == 1:
            return self._function(iterator)
        if not isinstance(iterator, tf.data.Iterator):  # a tf.distribute iterator: batches per replica
            self.enabled = False
            return self._function(iterator)
        spec = iterator.element_spec
        if self._replay is None or self._replay.spec != spec:
            if not all(isinstance(s, tf.TensorSpec) for s in tf.nest.flatten(spec)):
                self.enabled = False  # ragged or sparse batches: not split here
                return self._function(iterator)
            self._replay = _Replay(spec)
        batch = iterator.get_next_as_optional()
        if not batch.has_value():
            raise StopIteration  # fit's loop ends the epoch on it, as on Keras' own call
        rows = self._replay.hold(batch.get_value())
        self._measure(rows)
        return self._function(self._replay.rows(0, rows))

    def _measure(self, rows: int) -> None:
        b = rows // self.k
        if b < 1:
            return
        state = self._state()
        saved = [v.numpy() for v in state]
        steps_before, captures_before = int(self._opt.iterations.numpy()), int(self._captures.numpy())
        for i in range(self.k):
            self._mode.assign(1 if i == 0 else 2)
            self._function(self._replay.rows(i * b, (i + 1) * b))
        self._mode.assign(0)
        # Each micro-batch must have reached the capture and no update: a train_step of the
        # model's own may update the weights some other way. Stop rather than train on halves.
        captured = int(self._captures.numpy()) == captures_before + self.k
        captured &= int(self._opt.iterations.numpy()) == steps_before
        for v, value in zip(state, saved):
            v.assign(value)
        if not captured:
            self.enabled = False
            return
        k = float(self.k)
        small = float(self._squares.numpy()) / k  # |g_small|², batch b
        big = sum(float(np.sum(np.square(buf.numpy()))) for buf in self._buffer) / k**2  # |g_big|², batch kb
        self._sums += (*estimates(small, big, b, self.k * b, self.rows), 1.0)
        self.measurements += 1

    def _state(self) -> list:
        """Variables a train step changes besides the weights and the optimizer's slots."""
        model, outer = self.model, self.model.optimizer
        inner = {id(v) for v in self._opt.variables}
        own = [v for v in outer.variables if id(v) not in inner] if outer is not self._opt else []
        return [*model.non_trainable_variables, *model.metrics_variables, self._opt.iterations, *own]

    # ------------------------------------------------------------- per epoch

    def reset(self) -> None:
        self._sums = np.zeros(3)

    def read(self) -> dict[str, float] | None:
        """The epoch's means of tr(Σ) and |G|² and their ratio B_simple; None when nothing
        was measured. B_simple is NaN when the mean |G|² is not positive: the signal was
        below what this epoch's measurements resolve."""
        trace, g2, n = (float(v) for v in self._sums)
        if n == 0:
            return None
        trace, g2 = trace / n, g2 / n
        return {"tr_sigma": trace, "g2": g2, "b_simple": trace / g2 if g2 > 0 else math.nan}

    def detach(self) -> None:
        self._mode.assign(0)  # a train function that outlives the fit applies every step
        self._opt.__dict__.pop("apply", None)
        if self.model.train_function is self._train_function:
            self.model.train_function = self._function


def estimates(small: float, big: float, b_small: int, b_big: int, rows: int | None = None) -> tuple[float, float]:
    """(tr(Σ), |G|²) from |g_small|² at batch b_small and |g_big|² at batch b_big: the
    paper's unbiased two-batch estimates, E|g_B|² = |G|² + tr(Σ) c_B with c_B = 1/B.

    Given the training set's `rows` N, batches are what Keras draws, rows without
    replacement from N, and c_B = (1/B - 1/N) N/(N-1): G and Σ are then the training
    set's own mean and covariance (the gradient of the training loss, and its spread).
    Without it, on 216 Japanese Vowels rows, |G|² reads low by tr(Σ)/(N-1) (15-30 % of it
    while learning, and below 0 once the model fits the training set) and B_simple high."""
    c_small, c_big = _inverse_batch(b_small, rows), _inverse_batch(b_big, rows)
    trace = (small - big) / (c_small - c_big)
    g2 = big - c_big * trace
    return trace, g2


def _inverse_batch(batch: int, rows: int | None) -> float:
    if not rows or rows <= 1:
        return 1.0 / batch
    return (1.0 / batch - 1.0 / rows) * rows / (rows - 1)


class _Replay:
    """Rows of one held batch fed to Keras' compiled train step as its own batches are.

    The step was traced for the fit's iterator (its element spec: batch dimension
    unknown); an iterator of the same spec is taken by that same trace, while a plain
    tensor has a concrete shape and would cost a trace of its own (~0.5 s of CPU, and
    another per micro-batch size). One iterator serves the whole fit: each element is
    made when asked for, from the batch held in variables and the rows asked for.
    """

    def __init__(self, spec) -> None:
        import tensorflow as tf

        self.spec = spec
        # When every batch of the fit has one size (rows a multiple of the batch), Keras'
        # spec and trace carry that size: micro-batches then need one more trace, for any
        # batch size, which they get once from this relaxed spec.
        flat = [tf.TensorSpec([None, *s.shape[1:]], s.dtype, s.name) for s in tf.nest.flatten(spec)]
        self._held = [
            tf.Variable(tf.zeros([d or 0 for d in s.shape], s.dtype), shape=s.shape, trainable=False) for s in flat
        ]
        self._range = tf.Variable([0, 0], dtype=tf.int64, trainable=False)

        @tf.autograph.experimental.do_not_convert  # plain ops: converting them costs ~50 ms
        def element(_):
            lo, hi = self._range[0], self._range[1]
            return tf.nest.pack_sequence_as(
                spec, [tf.ensure_shape(v[lo:hi], s.shape) for v, s in zip(self._held, flat)]
            )

        options = tf.data.Options()
        options.autotune.enabled = False
        options.experimental_optimization.inject_prefetch = False  # made on demand: the variables change
        dataset = tf.data.Dataset.from_tensors(0).repeat().map(element).with_options(options)
        self.iterator = iter(dataset)

    def hold(self, data) -> int:
        """Hold one batch; returns its rows."""
        import tensorflow as tf

        flat = tf.nest.flatten(data)
        for v, t in zip(self._held, flat):
            v.assign(t)
        return int(flat[0].shape[0])

    def rows(self, lo: int, hi: int):
        self._range.assign([lo, hi])
        return self.iterator


def _dense(g):
    import tensorflow as tf

    if isinstance(g, tf.IndexedSlices):  # embeddings: the rows this micro-batch touched
        g = tf.convert_to_tensor(g)
    return tf.cast(g, tf.float64)


def _returning_nothing(apply_fn, grads, variables):
    import tensorflow as tf

    apply_fn(grads, variables)
    return tf.constant(0)
