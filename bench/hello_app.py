"""The JWKS baseline: a hello-world endpoint of the same framework (FastAPI), served by the
runner exactly like authsvc (uvicorn, same workers, uvloop + httptools, no access log)."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}
