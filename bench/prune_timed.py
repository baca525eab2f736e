#!/usr/bin/env python3
"""`authsvc prune`, timed from inside: the same service call as the command (the settings from
the environment), with the process's start-up left out. Prints one JSON line: the rows
deleted per table and the seconds the prune itself took."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

from authsvc.cli.runner import run
from authsvc.services.maintenance import prune


async def work(state: Any) -> dict[str, Any]:
    started = time.monotonic()
    report = await prune(state.database, state.keys, state.clock.now(), state.settings.prune_batch)
    return {"rows": asdict(report), "seconds": time.monotonic() - started}


if __name__ == "__main__":
    print(json.dumps(run(work)), flush=True)
