-- Shared by the bench/wrk scripts: done() prints one JSON line the runner parses.
-- Latencies are wrk's own (microseconds, from request written to response read).
threads = {}

function register(thread)
   table.insert(threads, thread)
end

function report(summary, latency, requests)
   local broken = 0
   for _, t in ipairs(threads) do
      broken = broken + (t:get("broken") or 0)
   end
   local e = summary.errors
   io.write(string.format(
      '\nBENCH_JSON {"requests":%d,"duration_us":%d,"errors_status":%d,"errors_connect":%d,' ..
      '"errors_read":%d,"errors_write":%d,"errors_timeout":%d,"broken_chains":%d,' ..
      '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
      summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
      broken, latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.mean, latency.max))
end
