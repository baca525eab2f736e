-- POST a username/password JSON body (the same body for authsvc and the simplejwt peer).
-- Usage: wrk -s login.lua URL -- USERNAME PASSWORD
dofile(os.getenv("BENCH_WRK_DIR") .. "/report.lua")

function setup(thread)
   register(thread)
end

function init(args)
   wrk.headers["Content-Type"] = "application/json"
   local body = string.format('{"username": "%s", "password": "%s"}', args[1], args[2])
   req = wrk.format("POST", wrk.path, nil, body)
end

function request()
   return req
end

done = report
