"""The development-only example SPA's static files (AUTHSVC_SPA_DIR, mounted at /spa)."""

from __future__ import annotations

from fastapi.staticfiles import StaticFiles
from starlette.responses import RedirectResponse, Response
from starlette.types import Scope


class SpaFiles(StaticFiles):
    """StaticFiles whose `dir` -> `dir/` redirect is relative: Starlette's is an absolute URL
    built from the Host header, a redirect to whatever host the client names."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if isinstance(response, RedirectResponse):
            name = str(scope["path"]).rstrip("/").rsplit("/", 1)[-1]
            return RedirectResponse(f"{name}/", status_code=response.status_code)
        return response
