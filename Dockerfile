# The llm-exporter image: the proxy, and the demo upstream, load generator and Slack receiver the
# compose stack runs from it. Multi-stage: the build stage makes wheels, the final stage installs
# only those (no compiler, no pip cache) and runs as a non-root user.
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
# exporter/data/runbooks.md links to docs/runbooks.md (served at /runbooks): the wheel takes its content.
COPY docs/runbooks.md ./docs/runbooks.md
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11.11-slim-bookworm
RUN useradd --system --uid 10001 --user-group --home-dir /data llm-exporter \
    && mkdir -p /data /etc/llm-exporter \
    && chown llm-exporter:llm-exporter /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
# Numeric, so that the runtime (and Kubernetes runAsNonRoot) can tell it is not root.
USER 10001:10001
# The request log (llm-exporter.db) is written to the working directory.
WORKDIR /data
VOLUME ["/data", "/etc/llm-exporter"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["llm-exporter"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
