"""A trained custom run over HTTP: the served run with its batching and sessions (service), the FastAPI app (api)
and its live page (page.html), and Ray Serve replicas (replicas); loadtest.py at the root measures it."""
