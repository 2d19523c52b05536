"""Offline evaluation: data sets, the Kafka replay harness, prequential scoring, baselines,
metrics, the report and its plots.

Nothing on the live path (streams/, agents/, models/) imports this package; it uses
streams/, config/ and models/, and talks to workers only through Kafka and subprocesses
(a test enforces both directions).
"""
