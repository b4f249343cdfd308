"""The REST API under /api/v1 (issue 9): FastAPI, an OpenAPI document at
/api/v1/openapi.json, API keys or a staff session, RFC 9457 problem details.

Routes are thin: they turn HTTP into calls of the feature packages' service functions,
which take the caller's `Principal` and check its permissions themselves."""
