-- Shared by the bench/wrk scripts: done() prints one JSON line the runner parses.
-- Latencies are wrk's own (microseconds, from request written to response read).
threads = {}

function register(thread)
   table.insert(threads, thread)
end

function report(summary, latency, requests)
   local broken, first_error = 0, ""
   for _, t in ipairs(threads) do
      broken = broken + (t:get("broken") or 0)
      if first_error == "" and t:get("first_error") then
         first_error = t:get("first_error")
      end
   end
   local e = summary.errors
   io.write(string.format(
      '\nBENCH_JSON {"requests":%d,"duration_us":%d,"errors_status":%d,"errors_connect":%d,' ..
      '"errors_read":%d,"errors_write":%d,"errors_timeout":%d,"broken_chains":%d,' ..
      '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d,"first_error":"%s"}\n',
      summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
      broken, latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.mean, latency.max, first_error))
end
