"""Explain loss curves: curve features, diagnosis rules, run-to-run diffs and their reports."""
