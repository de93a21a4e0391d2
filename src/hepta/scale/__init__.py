"""Cluster planning: analytic memory/FLOPs/energy model and a dry run on a fake process group."""
