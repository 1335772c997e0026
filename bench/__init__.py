"""losstrace benchmarks (`make bench` → `python bench/run.py`).

Each module measures one claim of the README as ratios within one run, because the
machine is shared and absolute timings drift between runs; run.py collects them into
bench/results.json and the README's Benchmarks section.
"""
