"""The JWKS baselines: FastAPI endpoints served by the runner exactly like authsvc (uvicorn,
same workers, uvloop + httptools, no access log).

  /hello   the framework's hello world (the issue's baseline)
  /static  constant bytes as long as authsvc's JWKS, with the same headers: what serving that
           document costs in this framework when it costs nothing to produce
"""

import os

from fastapi import FastAPI, Response

app = FastAPI()
_STATIC = b"x" * int(os.environ.get("BENCH_STATIC_BYTES", "450"))


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


@app.get("/static")
async def static() -> Response:
    return Response(
        _STATIC,
        headers={"Cache-Control": "public, max-age=300"},
        media_type="application/jwk-set+json",
    )
