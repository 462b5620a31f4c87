"""Markdown tables from one run's results, and writing them into docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path

BEGIN = "<!-- bench:proxy:begin (written by python -m bench; edits inside are overwritten) -->"
END = "<!-- bench:proxy:end -->"


def _f(value, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and abs(value) >= 100:
        return f"{value:,.0f}{suffix}"
    return f"{value:,.{digits}f}{suffix}"


def _by(rows: list[dict], key: str) -> dict:
    return {row[key]: row for row in rows}


def render(results: dict) -> str:
    out: list[str] = []
    machine = results["machine"]
    out.append(f"Run of {results['started']}, {results.get('seconds', 0):.0f} s: {machine['cpu']}, "
               f"{machine['cores']} cores, Linux {machine['kernel']}, Python {machine['python']}, load average at "
               f"start {' '.join(machine['loadavg_at_start'])}. LiteLLM "
               + (results.get("litellm_version") or f"not measured: {results.get('litellm_error')}") + ".")
    out.append("")
    if "nonstream" in results:
        out += _nonstream(results["nonstream"])
    if "stream" in results:
        out += _stream(results["stream"])
    if "big" in results or "slow" in results:
        out += _memory(results.get("big", []), results.get("slow", []))
    if "scrape" in results:
        out += _scrape(results["scrape"])
    if "cpu" in results:
        out += _cpu(results["cpu"])
    if "clients" in results:
        out += _clients(results["clients"])
    out += _targets(results)
    return "\n".join(out).rstrip() + "\n"


def _nonstream(rows: list[dict]) -> list[str]:
    out = ["### Non-streamed requests (wrk, keep-alive, median of the rounds)", "",
           "| clients | path | req/s | p50 ms | p99 ms | added p50 / p99 ms | req/s vs LiteLLM | CPU µs/request | errors |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for connections in sorted({r["connections"] for r in rows}):
        group = _by([r for r in rows if r["connections"] == connections], "target")
        direct, litellm = group.get("direct"), group.get("LiteLLM")
        for name, row in group.items():
            added = "-" if name == "direct" or not direct else \
                f"{row['p50_ms'] - direct['p50_ms']:.2f} / {row['p99_ms'] - direct['p99_ms']:.2f}"
            ratio = "-" if not litellm or name == "LiteLLM" or not litellm["rps"] else f"{row['rps'] / litellm['rps']:.1f}x"
            cpu = _f(row["cpu_us_per_request"], 0) + (" (upstream)" if name == "direct" else "")
            out.append(f"| {connections} | {name} | {_f(row['rps'], 0)} | {_f(row['p50_ms'])} | {_f(row['p99_ms'])} | "
                       f"{added} | {ratio} | {cpu} | {row['errors']} |")
    return out + [""]


def _stream(rows: list[dict]) -> list[str]:
    group = _by(rows, "target")
    direct = group.get("direct")
    out = ["### Streaming: time to first byte and delay per chunk (sequential streams)", "",
           "| path | TTFB p50 ms | TTFB p99 ms | added TTFB p50 ms | chunk delay p50 ms | chunk delay p99 ms | "
           "added chunk delay p50 ms | streams (errors) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, row in group.items():
        def added(key: str) -> str:
            if name == "direct" or not direct or row[key] is None or direct[key] is None:
                return "-"
            return f"{row[key] - direct[key]:.3f}"
        out.append(f"| {name} | {_f(row['ttfb_p50_ms'], 3)} | {_f(row['ttfb_p99_ms'], 3)} | {added('ttfb_p50_ms')} | "
                   f"{_f(row['chunk_delay_p50_ms'], 3)} | {_f(row['chunk_delay_p99_ms'], 3)} | "
                   f"{added('chunk_delay_p50_ms')} | {row['streams']} ({row['errors']}) |")
    return out + [""]


def _memory(big: list[dict], slow: list[dict]) -> list[str]:
    out = ["### Memory (RSS of the proxy process; for the direct path, of the upstream)", "",
           "| case | path | outcome | RSS before MB | RSS peak MB | growth MB |", "|---|---|---|---:|---:|---:|"]
    for row in big:
        outcome = (f"{row['bytes'] / 1e9:.2f} GB in {row['seconds']:.1f} s ({_f(row['mb_per_s'], 0)} MB/s)"
                   + ("" if row["complete"] else f", not complete: {row['error']}"))
        out.append(f"| one 1 GB stream | {row['target']} | {outcome} | {_f(row['rss_base_mb'], 1)} | "
                   f"{_f(row['rss_peak_mb'], 1)} | {_f(row['rss_growth_mb'], 1)} |")
    for row in slow:
        outcome = f"{row['complete']}/{row['streams']} complete in {row['seconds']:.1f} s"
        out.append(f"| {row['streams']:,} concurrent slow streams | {row['target']} | {outcome} | "
                   f"{_f(row['rss_base_mb'], 1)} | {_f(row['rss_peak_mb'], 1)} | {_f(row['rss_growth_mb'], 1)} |")
    return out + [""]


def _scrape(rows: list[dict]) -> list[str]:
    out = ["### /metrics after 100 models x every API path (scraped as Prometheus does)", "",
           "| proxy | format | series | body | scrape p50 ms | scrape max ms | populating requests ok |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        out.append(f"| {row['target']} | {row.get('format', '-')} | {row['series']:,} | {row['bytes'] / 1e6:.2f} MB | "
                   f"{_f(row['scrape_p50_ms'], 1)} | {_f(row['scrape_max_ms'], 1)} | {row['ok']}/{row['requests']} |")
    return out + [""]


def _cpu(rows: list[dict]) -> list[str]:
    plain = rows[0]
    out = ["### What the measuring costs (exporter process, all threads)", "",
           "CPU at 10 clients; latency of JSON requests at 1 client (wrk).", "",
           "| variant | CPU µs per JSON request | CPU µs per stream of 50 chunks | CPU vs plain relay (JSON / stream) "
           "| p50 ms at 1 client | p99 ms at 1 client |",
           "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        vs = "-" if row is plain else (f"+{row['json_us'] - plain['json_us']:.0f} µs / "
                                        f"+{row['stream_us'] - plain['stream_us']:.0f} µs")
        out.append(f"| {row['variant']} | {_f(row['json_us'], 0)} | {_f(row['stream_us'], 0)} | {vs} | "
                   f"{_f(row.get('p50_ms'))} | {_f(row.get('p99_ms'))} |")
    return out + [""]


def _clients(rows: list[dict]) -> list[str]:
    out = ["### Upstream HTTP clients alone (in one process, on uvloop)", "",
           "| client | concurrency | req/s | CPU µs/request |", "|---|---:|---:|---:|"]
    for row in rows:
        out.append(f"| {row['client']} | {row['concurrency']} | {_f(row['rps'], 0)} | {_f(row['cpu_us'], 0)} |")
    return out + [""]


def _targets(results: dict) -> list[str]:
    """The issue's targets, checked against this run's numbers."""
    checks: list[tuple[str, str, bool | None]] = []
    ns = results.get("nonstream", [])

    def pick(connections: int, target: str) -> dict | None:
        return next((r for r in ns if r["connections"] == connections and r["target"] == target), None)

    direct1, exp1 = pick(1, "direct"), pick(1, "llm-exporter")
    if direct1 and exp1:
        added50, added99 = exp1["p50_ms"] - direct1["p50_ms"], exp1["p99_ms"] - direct1["p99_ms"]
        checks.append(("added latency at 1 client, p50 <= 1 ms", f"{added50:.2f} ms", added50 <= 1))
        checks.append(("added latency at 1 client, p99 <= 3 ms", f"{added99:.2f} ms", added99 <= 3))
    exp10, lite10 = pick(10, "llm-exporter"), pick(10, "LiteLLM")
    if exp10 and lite10 and lite10["rps"]:
        ratio = exp10["rps"] / lite10["rps"]
        checks.append(("throughput at 10 clients >= 10x LiteLLM", f"{ratio:.1f}x ({exp10['rps']:,.0f} vs "
                       f"{lite10['rps']:,.0f} req/s)", ratio >= 10))
    stream = _by(results.get("stream", []), "target")
    if "direct" in stream and "llm-exporter" in stream and stream["llm-exporter"]["ttfb_p50_ms"] is not None:
        added = stream["llm-exporter"]["ttfb_p50_ms"] - stream["direct"]["ttfb_p50_ms"]
        checks.append(("time to first byte added, p50 <= 1 ms", f"{added:.2f} ms", added <= 1))
    big = _by(results.get("big", []), "target").get("llm-exporter")
    if big:
        checks.append(("memory growth over one 1 GB stream <= 20 MB", f"{big['rss_growth_mb']:.1f} MB"
                       + ("" if big["complete"] else " (stream not complete)"), big["rss_growth_mb"] <= 20 and big["complete"]))
    slow = _by(results.get("slow", []), "target").get("llm-exporter")
    if slow:
        checks.append((f"memory growth for {slow['streams']:,} concurrent streams <= 200 MB",
                       f"{slow['rss_growth_mb']:.1f} MB ({slow['complete']} complete)",
                       slow["rss_growth_mb"] <= 200 and slow["complete"] == slow["streams"]))
    scrape = _by(results.get("scrape", []), "target").get("llm-exporter")
    if scrape and scrape["scrape_p50_ms"] is not None:
        checks.append((f"scrape <= 100 ms (at {scrape['series']:,} series)", f"{scrape['scrape_p50_ms']:.1f} ms p50, "
                       f"{scrape['scrape_max_ms']:.1f} ms max", scrape["scrape_p50_ms"] <= 100))
    out = ["### The issue's targets in this run", "", "| target | measured | met |", "|---|---|---|"]
    for name, measured, met in checks:
        out.append(f"| {name} | {measured} | {'yes' if met else 'no'} |")
    return out + [""]


def write_into(path: Path, markdown: str) -> None:
    """Replace what is between the markers (appending a section with them when they are missing)."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n{markdown}{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + "\n\n## Proxy overhead: the tables of the last run\n\n" + block + "\n"
    path.write_text(text)
