"""Where posts come from: the X API v2 filtered stream and recent search, and JSONL replay.

Every source is a `base.PostSource`: an iterator of post batches (`list[Post]`: one stream line,
one search page, one chunk of a file) that keeps a `SourceStats` of what it read, skipped and
retried, and stops when asked. `registry.py` lists them for `hepta live ingest --source`.
"""
