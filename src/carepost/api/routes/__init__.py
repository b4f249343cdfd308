"""One module per resource, each with a `router`; app.py includes them in ROUTERS order."""
