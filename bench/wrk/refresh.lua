-- Chained refresh: every virtual client spends its current refresh token and continues with the
-- one the server returns, so each request rotates a live token exactly once (no reuse, no
-- grace-window retries).
--
-- Run with -t N -c N: each wrk thread drives exactly one connection, so a thread's state is its
-- connection's state (wrk's request() and response() do not say which connection they serve).
-- The runner logs in N times before the run and writes one refresh token per line; thread i
-- takes line i as its connection's current token. request() only reads the current token (wrk
-- also calls it once per thread before connecting and drops that request); response() replaces
-- it with the successor from the body. A failed refresh breaks that chain: counted, and its
-- connection keeps sending the dead token (each such request is a non-2xx in wrk's errors).
--
-- Usage: wrk -t N -c N -s refresh.lua URL -- TOKENS_FILE REQUEST_FIELD RESPONSE_FIELD
--   authsvc: ... refresh_token refresh_token     simplejwt: ... refresh refresh
dofile(os.getenv("BENCH_WRK_DIR") .. "/report.lua")

local counter = 0

function setup(thread)
   counter = counter + 1
   thread:set("id", counter)
   register(thread)
end

function init(args)
   local path = args[1]
   req_field, resp_field = args[2], args[3]
   wrk.headers["Content-Type"] = "application/json"
   broken = 0
   local i = 0
   for line in io.lines(path) do
      i = i + 1
      if i == id then
         current = line
      end
   end
   assert(current, "fewer tokens in " .. path .. " than wrk threads")
   pattern = '"' .. resp_field .. '"%s*:%s*"([^"]+)"'
end

function request()
   return wrk.format("POST", wrk.path, nil, string.format('{"%s": "%s"}', req_field, current))
end

function response(status, headers, body)
   local token = status == 200 and body:match(pattern)
   if token then
      current = token
   else
      broken = broken + 1
      if not first_error then
         -- kept JSON-safe for report(): no control characters, quotes or backslashes
         first_error = string.gsub(status .. " " .. string.sub(body or "", 1, 160),
                                   '[%c"\\]', " ")
      end
   end
end

done = report
