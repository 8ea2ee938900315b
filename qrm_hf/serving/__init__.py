"""`qrm serve`: the FastAPI app, its config and the continuous batcher (the [serve] extra)."""
