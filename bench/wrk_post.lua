-- wrk script: POST one OpenAI chat request per call; print the result as one JSON line.
-- The body comes from the environment (BENCH_BODY), so the Python driver chooses it.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or '{"model":"bench","messages":[{"role":"user","content":"hi"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = os.getenv("BENCH_AUTH") or "Bearer sk-bench"

done = function(summary, latency, requests)
   local errors = summary.errors
   io.write(string.format(
      'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d}\n',
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
      errors.connect, errors.read, errors.write, errors.status, errors.timeout))
end
