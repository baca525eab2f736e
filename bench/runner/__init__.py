"""The benchmark runner behind bench/run.py, one module per job: common (paths, workload
shape), servers (the processes under test), load (wrk runs), baselines (raw primitives),
block (one database and worker count) and report (table, JSON, chart)."""
