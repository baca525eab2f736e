-- GET the URL; optional argument: a bearer token (for /auth/me).
-- Usage: wrk -s get.lua URL [-- TOKEN]
dofile(os.getenv("BENCH_WRK_DIR") .. "/report.lua")

function setup(thread)
   register(thread)
end

function init(args)
   if args[1] and args[1] ~= "" then
      wrk.headers["Authorization"] = "Bearer " .. args[1]
   end
   req = wrk.format("GET", wrk.path)
end

function request()
   return req
end

done = report
