"""Alertmanager routes as code.

`python -m alertmanager` writes alertmanager/alertmanager.yml from the config object in
alertmanager/config.py; message templates live in alertmanager/templates/.
"""
