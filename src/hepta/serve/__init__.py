"""HTTP API: OpenAI/xAI-compatible endpoints over the inference engine (FastAPI)."""
