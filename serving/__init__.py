"""A trained custom run over HTTP: the loaded run with its batching and sessions, the FastAPI app and its live page,
Ray Serve replicas, and the load test."""
