"""The post-source registry: a source added as docs/live.md shows ingests through `hepta live ingest`."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from hepta.cli import main
from hepta.live.sources import registry
from hepta.live.sources.base import IterableSource, PostSource
from hepta.live.sources.replay import JsonlReplay
from hepta.live.sources.x_search import XSearch
from hepta.live.sources.x_stream import XStream
from hepta.live.store import Store
from hepta.live.synth import SAMPLE_STREAM, SynthConfig, synthesize_stream

DOC = Path(__file__).parents[2] / "docs" / "live.md"


def doc_code() -> tuple[str, tuple[str, ...]]:
    """The new source's file and the registry's module list, as "Adding a post source" shows them."""
    section = DOC.read_text(encoding="utf-8").split("### Adding a post source", 1)[1].split("\n## ", 1)[0]
    module_code, registry_code = re.findall(r"```python\n(.*?)```", section, re.S)
    names: dict = {}
    exec(registry_code, names)
    return module_code, names["SOURCE_MODULES"]


@pytest.fixture
def doc_source(monkeypatch):
    """Registers the documented source exactly as the page says: its file, and its line in SOURCE_MODULES."""
    module_code, modules = doc_code()
    added = [name for name in modules if name not in registry.SOURCE_MODULES]
    assert modules == (*registry.SOURCE_MODULES, *added) and len(added) == 1, "the page's registry is out of date"
    module = types.ModuleType(added[0])
    exec(compile(module_code, added[0], "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, added[0], module)
    monkeypatch.setattr(registry, "SOURCE_MODULES", modules)
    # `hepta live ingest` installs its own log handler on the root logger; keep that inside this test
    monkeypatch.setattr(logging.root, "handlers", list(logging.root.handlers))
    monkeypatch.setattr(logging.root, "level", logging.root.level)
    return module


def test_a_documented_source_ingests_through_the_cli(doc_source, monkeypatch, tmp_path, capsys):
    lines = synthesize_stream(SynthConfig(posts=300, seed=5, minutes=30)).lines
    piped = "".join(json.dumps(line) + "\n" for line in lines) + "\n<html>busy</html>\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(piped))
    db = tmp_path / "p.db"
    assert main(["live", "ingest", "--source", "stdin", "--db", str(db), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"read {len(lines):,} posts" in out and "1 malformed skipped" in out
    with Store(db) as store:
        assert store.count() == len({line["data"]["edit_history_tweet_ids"][0] for line in lines})


def test_the_registry_gives_the_help_and_the_error(doc_source, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["live", "ingest", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "x-search:QUERY (X recent search) or stdin (X post JSON lines piped in)" in shown
    for spec in ("kafka:topic", "stdin:extra", "jsonl:", "x-search: "):
        assert main(["live", "ingest", "--source", spec, "--db", str(tmp_path / "p.db")]) == 1
        assert capsys.readouterr().err == (f"error: --source {spec!r} is not a source; "
                                           "use jsonl:PATH, x-stream, x-search:QUERY or stdin\n")
    assert not (tmp_path / "p.db").exists()


def test_forms_pass_their_value_and_flags_reach_the_source(tmp_path):
    kind, value = registry.find_source("x-search:lang:ja #AI")
    assert (kind.name, value) == ("x-search", "lang:ja #AI")  # only the first colon separates
    kind, value = registry.find_source(f"jsonl:{SAMPLE_STREAM}")
    source = kind.open(value, types.SimpleNamespace(speed=60.0))
    assert isinstance(source, JsonlReplay) and source.speed == 60.0 and source.path == SAMPLE_STREAM


def test_every_source_is_a_post_source():
    sources = [JsonlReplay(SAMPLE_STREAM), XStream("token"), XSearch("token", "AI"), IterableSource([])]
    assert all(isinstance(source, PostSource) for source in sources)
    assert not isinstance([[]], PostSource)  # a bare list of batches has no stats and cannot stop
    assert [kind.form for kind in registry.source_kinds()] == ["jsonl:PATH", "x-stream", "x-search:QUERY"]


def test_building_the_hepta_parser_reads_every_source_without_importing_httpx():
    code = ("import sys\nimport hepta.cli\nhepta.cli.build_parser()\n"
            "print(sorted(m for m in ('httpx', 'hepta.live.sources.x_stream') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['hepta.live.sources.x_stream']"  # httpx waits until a source reads X
