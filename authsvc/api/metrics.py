"""GET /metrics: Prometheus text format, behind a bearer token (AUTHSVC_METRICS_TOKEN).

Without the setting the endpoint does not exist (404): metrics tell an attacker about traffic
and failures, so they are off until an operator opts in.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from authsvc.api.deps import State, bearer_token
from authsvc.errors import InvalidToken, NotFound
from authsvc.observability.metrics import CONTENT_TYPE, token_matches

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, state: State) -> Response:
    expected = state.settings.metrics_token
    if expected is None:
        raise NotFound()
    presented = bearer_token(request.headers.get("authorization"))
    if not token_matches(presented, expected.get_secret_value()):
        raise InvalidToken("Wrong metrics token.")
    return Response(
        state.metrics.render(), media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"}
    )
