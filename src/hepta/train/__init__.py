"""Training: data, optimizer and schedule, the loop, resumable state and records."""
