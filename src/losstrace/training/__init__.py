"""Keras-side training machinery: batch-loss recovery, gradient norms, batching, distribution, resume."""
