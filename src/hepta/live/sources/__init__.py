"""Where posts come from: the X API v2 filtered stream and recent search, and JSONL replay.

Every source is an iterator of post batches (`list[Post]`: one stream line, one search page, one
chunk of a file) and keeps a `SourceStats` of what it read, skipped and retried.
"""
