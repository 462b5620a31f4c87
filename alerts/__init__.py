"""Prometheus alerting and recording rules as code.

`python -m alerts` writes alerts/generated/*.yml (loaded by Prometheus) and alerts/tests/*.yml
(promtool unit tests) from the config object in alerts/config.py.
"""
