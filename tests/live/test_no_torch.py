"""hepta.live runs as a light process: importing any of its modules loads no torch."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import hepta.live


def test_no_live_module_imports_torch():
    names = sorted(m.name for m in pkgutil.walk_packages(hepta.live.__path__, "hepta.live."))
    assert {"hepta.live.post", "hepta.live.ingest", "hepta.live.sources.x_stream", "hepta.live.synth"} <= set(names)
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
            "print(len(loaded))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0", "a hepta.live module imported torch"
