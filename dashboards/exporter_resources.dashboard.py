"""Exporter Resources: is the exporter itself healthy, and is Prometheus scraping it?"""

import sys
from pathlib import Path

# grafanalib's loader executes this file by path, outside any package: make the repo importable.
_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from dashboards import common as C  # noqa: E402
from dashboards import queries as Q  # noqa: E402
from exporter import catalog  # noqa: E402

INSTANCE, API = Q.INSTANCE, catalog.API
# prometheus-client's default process collector, and the series Prometheus adds to every scrape.
CPU_SECONDS = "process_cpu_seconds_total"
RESIDENT_MEMORY = "process_resident_memory_bytes"
OPEN_FDS = "process_open_fds"
MAX_FDS = "process_max_fds"
UP = "up"
SCRAPE_DURATION = "scrape_duration_seconds"
PROCESS = "From prometheus-client's process collector (one series per exporter process)."

health = [
    C.stat(
        "Scrape health", "Prometheus's `up` for each exporter instance: DOWN means the last scrape failed "
        "and every other panel is going stale.", C.NO_UNIT,
        [C.target(Q.target_series(UP), "{{instance}}")],
        mappings=C.UP_DOWN_MAPPINGS, thresholds=C.steps((C.RED, None), (C.GREEN, 1)), w=8,
    ),
    C.stat(
        "Telemetry rows dropped", "Request-log rows dropped in the dashboard's time range because the "
        "SQLite writer's queue was full. Metrics are unaffected; the request log has gaps.", C.NUMBER,
        [C.target(Q.sum_by(Q.increase_over_range(Q.series(catalog.TELEMETRY_DROPPED))), instant=True)],
        thresholds=C.steps((C.GREEN, None), (C.RED, 1)), w=8,
    ),
    C.table(
        "Exporter versions", "The llm-exporter version each instance runs (llm_exporter_build_info).",
        C.NO_UNIT,
        [C.target(Q.series(catalog.BUILD_INFO), instant=True, fmt="table")],
        w=8, h=4,
        transformations=[
            {
                "id": "organize",
                "options": {"excludeByName": {"Time": True, "Value": True, "__name__": True}},
            }
        ],
    ),
]

process = [
    C.timeseries(
        "CPU", f"CPU time per second: 1 = 100% of one core. {PROCESS}", C.RATIO,
        [C.target(Q.sum_by(Q.rate(Q.target_series(CPU_SECONDS)), INSTANCE), "{{instance}}")], w=8,
    ),
    C.timeseries(
        "Resident memory", f"Memory held in RAM. Should stay flat: the tap never buffers whole "
        f"bodies. {PROCESS}", C.BYTES,
        [C.target(Q.sum_by(Q.target_series(RESIDENT_MEMORY), INSTANCE), "{{instance}}")], w=8,
    ),
    C.timeseries(
        "Open file descriptors", f"Open sockets and files, and the limit. Connections to clients and "
        f"upstreams each hold one. {PROCESS}", C.NUMBER,
        [
            C.target(Q.sum_by(Q.target_series(OPEN_FDS), INSTANCE), "{{instance}} open"),
            C.target(Q.sum_by(Q.target_series(MAX_FDS), INSTANCE), "{{instance}} limit"),
        ],
        w=8,
    ),
]

work = [
    C.timeseries(
        "In flight", "Requests being proxied right now, per instance: each holds a client and an "
        "upstream connection.", C.NUMBER,
        [C.target(Q.sum_by(Q.series(catalog.IN_FLIGHT), INSTANCE), "{{instance}}")], w=8,
    ),
    C.timeseries(
        "Telemetry rows dropped per second", "Request-log rows dropped because the SQLite writer fell "
        "behind; 0 on a healthy exporter.", C.PER_SECOND,
        [C.target(Q.sum_by(Q.rate(Q.series(catalog.TELEMETRY_DROPPED)), INSTANCE), "{{instance}}")], w=8,
    ),
    C.timeseries(
        "Scrape duration", "How long Prometheus takes to scrape /metrics; grows with the number of "
        "series (models x upstreams x API families).", C.SECONDS,
        [C.target(Q.target_series(SCRAPE_DURATION), "{{instance}}")], w=8,
    ),
    C.timeseries(
        "Mean request and response size", "Average body size per API family: request as received, "
        "response as sent (encoded bytes on the wire).", C.BYTES,
        [
            C.target(Q.mean(catalog.REQUEST_SIZE, by_labels=[API]), "request {{api}}"),
            C.target(Q.mean(catalog.RESPONSE_SIZE, by_labels=[API]), "response {{api}}"),
        ],
    ),
    C.timeseries(
        "Proxied bytes per second", "Body bytes per second through the proxy, in (requests) and out "
        "(responses).", C.BYTES_PER_SECOND,
        [
            C.target(Q.rate_sum(catalog.REQUEST_SIZE, suffix="_sum"), "requests"),
            C.target(Q.rate_sum(catalog.RESPONSE_SIZE, suffix="_sum"), "responses"),
        ],
    ),
]

dashboard = C.dashboard(
    "Exporter Resources",
    "llm-exporter-resources",
    "The exporter's own health: CPU, memory, file descriptors, in-flight requests, dropped telemetry, "
    "body sizes and scrape health.",
    [
        C.Row("Health and versions", health),
        C.Row("Process: CPU, memory, file descriptors", process),
        C.Row("Work: in flight, telemetry, scrapes, bytes", work),
    ],
)
