"""`python -m bench` (or `make bench`): every benchmark case in one run, tables into docs/benchmarks.md.

Starts the bench upstream, llm-exporter (`llm-exporter serve`, as shipped) and LiteLLM's proxy, each
one process with one worker on 127.0.0.1, runs the cases alternating between the direct path and
the proxies, writes the tables between the markers in docs/benchmarks.md and the raw numbers to
bench/results.json, then runs the other benchmarks under bench/ (the request-log writer).

    python -m bench [--quick] [--no-litellm] [--no-write] [--exporter-src DIR]

--quick is a seconds-long smoke run (tiny cases, no LiteLLM, nothing written unless --write).
--exporter-src runs the exporter from another source tree (to compare against an older commit).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import cases, clients, cloud, litellm_env, report
from bench.cases import Target
from bench.loadgen import ensure_wrk
from bench.procs import Server, free_port, python_command

ROOT = Path(__file__).resolve().parent.parent


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _exporter(name: str, mode: str, upstream: str, workdir: Path, source: str | None) -> Server:
    port = free_port()
    env = {"PYTHONPATH": os.pathsep.join(p for p in (source, str(ROOT)) if p)}
    args = ["serve", "--upstream", upstream, "--port", str(port), "--db", str(workdir / f"{name}.db")]
    command = python_command("exporter", *args) if mode == "full" else python_command("bench.plain", mode, *args)
    # `python -m` puts the working directory first on sys.path: run where the exporter comes from.
    return Server(name=name, command=command, port=port, env=env, ready_path="/healthz",
                  log_path=str(workdir / f"{name}.log"), cwd=source or str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description="llm-exporter benchmarks")
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--no-litellm", action="store_true", help="leave LiteLLM out")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/ and bench/results.json")
    parser.add_argument("--write", action="store_true", help="write results even with --quick")
    parser.add_argument("--exporter-src", help="run llm-exporter from this source tree")
    parser.add_argument("--only", help="comma-separated cases: clients,cloud,nonstream,stream,big,slow,scrape,cpu")
    args = parser.parse_args()
    plan = cases.QUICK if args.quick else cases.Plan()
    write = (args.write or not args.quick) and not args.no_write
    with_litellm = not (args.no_litellm or args.quick)
    only = set(args.only.split(",")) if args.only else None
    wanted = lambda case: only is None or case in only  # noqa: E731

    if wanted("nonstream") or wanted("cpu"):
        ensure_wrk()
    started = time.time()
    results: dict = {"machine": _machine(), "plan": vars(plan), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    servers: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="llm-exporter-bench-") as tmp:
        workdir = Path(tmp)
        try:
            upstream = Server(name="upstream", command=python_command("bench.upstream", "--port", str(free_port())),
                              port=0, log_path=str(workdir / "upstream.log"), cwd=str(ROOT))
            upstream.port = int(upstream.command[-1])
            upstream.start()
            servers.append(upstream)
            exporter = _exporter("llm-exporter", "full", upstream.url, workdir, args.exporter_src)
            exporter.start()
            servers.append(exporter)
            targets = [Target("direct", upstream.url, None), Target("llm-exporter", exporter.url, exporter)]
            if with_litellm:
                try:
                    litellm = litellm_env.server(upstream.url, free_port(), workdir, _log)
                    litellm.start(timeout=180)
                    servers.append(litellm)
                    targets.append(Target("LiteLLM", litellm.url, litellm))
                    results["litellm_version"] = litellm_env.version()
                except Exception as exc:  # the rest still runs; the doc says why LiteLLM is missing
                    results["litellm_error"] = str(exc)
                    _log(f"LiteLLM left out: {exc}")
            else:
                results["litellm_error"] = "left out (--no-litellm or --quick)"

            if wanted("clients"):
                results["clients"] = clients.compare(upstream.url, 300 if args.quick else 3000, _log)
            if wanted("cloud"):  # in bench/results.json; docs/benchmarks.md quotes it by hand
                results["cloud"] = cloud.compare(args.quick, _log)
            if wanted("scrape"):  # first: the 100 models must be the first names the proxies see
                results["scrape"] = cases.scrape(plan, targets, _log)
            if wanted("nonstream"):
                results["nonstream"] = cases.nonstream(plan, targets, upstream, _log)
            if wanted("stream"):
                results["stream"] = cases.stream_latency(plan, targets, upstream, _log)
            if wanted("big"):
                results["big"] = cases.big_stream(plan, targets, upstream, _log)
            if wanted("slow"):
                results["slow"] = cases.slow_streams(plan, targets, upstream, _log)
            if wanted("cpu"):
                for target in targets[1:]:
                    target.server.pause()  # type: ignore[union-attr]
                variants = []
                for name, mode in (("plain relay", "plain"), ("measuring, no request or access log", "nolog"),
                                   ("llm-exporter (all on)", "full")):
                    variant = _exporter(f"variant-{mode}", mode, upstream.url, workdir, args.exporter_src)
                    variant.start()
                    servers.append(variant)
                    variants.append(Target(name, variant.url, variant))
                results["cpu"] = cases.cpu_per_request(plan, variants, upstream, _log)
                for variant in variants:
                    variant.server.stop()  # type: ignore[union-attr]
        finally:
            for server in reversed(servers):
                server.stop()
    results["seconds"] = time.time() - started
    _log(f"done in {results['seconds']:.0f} s")
    markdown = report.render(results)
    print(markdown)
    if write:
        (ROOT / "bench" / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
        report.write_into(ROOT / "docs" / "benchmarks.md", markdown)
        _log("wrote docs/benchmarks.md (between the bench:proxy markers) and bench/results.json")
    if not args.quick and only is None:
        _log("the request-log writer benchmark (bench/writer.py):")
        subprocess.run([sys.executable, str(ROOT / "bench" / "writer.py"), "--markdown"], cwd=ROOT, check=False,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})


def _machine() -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        load = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        load = []
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release(), "loadavg_at_start": load}


if __name__ == "__main__":
    main()
