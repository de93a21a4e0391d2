"""Cluster planning, pure arithmetic: memory, FLOPs, communication, GPUs, energy and inference
models, the planner, and its report and chart. Its dry run lives in `hepta.train.dryrun`."""
