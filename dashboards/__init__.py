"""Grafana dashboards as code: grafanalib sources (*.dashboard.py) and the helpers they share.

`queries` builds PromQL from the metric catalog, `common` builds panels, variables and dashboards.
The generated JSON lives in dashboards/generated/ and is loaded by Grafana through
dashboards/provisioning/.
"""
