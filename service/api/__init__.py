"""The FastAPI gateway: `create_app()` builds it, `promptrec serve` runs it under uvicorn."""
