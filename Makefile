# Targets a newcomer can guess. Python and pip are whatever `python3` is on PATH.
PYTHON ?= python3

.PHONY: install run test bench generate generate-dashboards generate-alerts

install:
	$(PYTHON) -m pip install -q -e '.[test]'

# The demo: a built-in upstream that speaks every API family, with the proxy in front of it.
run:
	$(PYTHON) -m pip install -q -e .
	llm-exporter demo

# The whole test suite. End-to-end tests need prometheus and prometheus-alertmanager on PATH
# (Debian: apt-get install -y prometheus prometheus-alertmanager); they skip without them,
# except in CI (CI=true), where a missing binary fails the run.
test: install
	$(PYTHON) -m pytest -q

# Benchmarks (numbers, not pass/fail), everything under bench/ in one run of about 10 minutes:
# the proxy against the direct path and LiteLLM (python -m bench: installs wrk from Debian if
# missing, LiteLLM into its own virtualenv under ~/.cache/llm-exporter-bench, writes its tables
# into docs/benchmarks.md), then the request log's writer (bench/writer.py, run by python -m bench).
bench: install
	$(PYTHON) -m bench

# Regenerate every generated file: dashboards, rule files, alertmanager.yml.
generate: generate-dashboards generate-alerts

# Grafana dashboards: grafanalib's generate-dashboard renders each dashboards/<name>.dashboard.py
# to dashboards/generated/<name>.json (stale JSON of removed sources is deleted first).
generate-dashboards:
	rm -f dashboards/generated/*.json
	mkdir -p dashboards/generated
	for src in dashboards/*.dashboard.py; do \
		generate-dashboard -o dashboards/generated/$$(basename $$src .dashboard.py).json $$src || exit 1; \
	done

# Prometheus rules and their promtool unit tests (alerts/generated/, alerts/tests/) from
# alerts/config.py, and alertmanager/alertmanager.yml from alertmanager/config.py.
generate-alerts:
	$(PYTHON) -m alerts
	$(PYTHON) -m alertmanager
