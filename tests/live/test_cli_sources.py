"""`hepta live ingest` and `hepta live synth` as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from helpers import run_cli
from x_standin import XStandin

from hepta.live.store import Store
from hepta.live.synth import SynthConfig, synthesize_stream


def run_with_env(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hepta", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


def assert_one_error_line(result: subprocess.CompletedProcess, words: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_synth_then_ingest_a_file(tmp_path):
    out, db = tmp_path / "stream.jsonl", tmp_path / "posts.db"
    made = run_cli("live", "synth", "--out", str(out), "--posts", "1500", "--seed", "3")
    assert made.returncode == 0, made.stderr
    assert "wrote " in made.stdout and "bursts: " in made.stdout and (tmp_path / "stream.jsonl.truth.json").is_file()
    done = run_cli("live", "ingest", "--source", f"jsonl:{out}", "--db", str(db), "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # --quiet: no live display
    lines = out.read_text(encoding="utf-8").splitlines()
    assert f"read {len(lines):,} posts" in done.stdout
    truth = json.loads((tmp_path / "stream.jsonl.truth.json").read_text(encoding="utf-8"))
    with Store(db) as store:
        assert store.count() == truth["distinct_ids"] - len(truth["edits"])
    again = run_cli("live", "ingest", "--source", f"jsonl:{out}", "--db", str(db), "--quiet")
    assert f"({len(lines):,} already stored" in again.stdout  # a second run stores nothing twice


def test_ingest_shows_live_counts_unless_quiet(tmp_path):
    out = tmp_path / "s.jsonl"
    run_cli("live", "synth", "--out", str(out), "--posts", "300")
    shown = run_cli("live", "ingest", "--source", f"jsonl:{out}", "--db", str(tmp_path / "p.db"))
    assert shown.returncode == 0 and "posts" in shown.stderr and "/s" in shown.stderr


def test_ingest_from_the_x_stream_and_x_search_stand_in(tmp_path):
    lines = synthesize_stream(SynthConfig(posts=400, seed=9, minutes=30)).lines
    env = {"X_BEARER_TOKEN": "test-token"}
    with XStandin(lines) as x:
        searched = run_with_env("live", "ingest", "--source", "x-search:lang:ja", "--db", str(tmp_path / "s.db"),
                                "--base-url", x.base_url, "--quiet", env=env)
        assert searched.returncode == 0, searched.stderr
        ja = {line["data"]["id"] for line in lines if line["data"]["lang"] == "ja"}
        assert f"read {len(ja):,} posts" in searched.stdout
        no_rules = run_with_env("live", "ingest", "--source", "x-stream", "--db", str(tmp_path / "x.db"),
                                "--base-url", x.base_url, env=env)
        assert_one_error_line(no_rules, "has no rules")
        assert not (tmp_path / "x.db").exists()  # nothing created on a user error

        db = tmp_path / "x.db"
        cmd = [sys.executable, "-m", "hepta", "live", "ingest", "--source", "x-stream", "--db", str(db),
               "--base-url", x.base_url, "--rule", "lang:en", "--rule", "lang:ja", "--quiet"]
        running = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env={**os.environ, **env})
        try:
            deadline = time.monotonic() + 120
            count = 0
            while time.monotonic() < deadline and running.poll() is None:
                if db.exists():
                    with Store(db) as store:
                        count = store.count()
                if count == len({line["data"]["edit_history_tweet_ids"][0] for line in lines}):
                    break
                time.sleep(0.1)
            running.send_signal(signal.SIGINT)  # Ctrl-C ends a stream: what arrived is written, then a summary
            stdout, stderr = running.communicate(timeout=60)
        finally:
            running.kill()
        assert running.returncode == 0, stderr
        assert "read " in stdout and "posts/s" in stdout
        assert sorted(r["value"] for r in x.rules.values()) == ["lang:en", "lang:ja"]


def test_cli_errors_are_one_line(tmp_path):
    env = {"X_BEARER_TOKEN": ""}
    missing = run_with_env("live", "ingest", "--source", "x-stream", "--db", str(tmp_path / "p.db"), env=env)
    assert_one_error_line(missing, "X_BEARER_TOKEN is not set")
    missing = run_with_env("live", "ingest", "--source", "x-search:AI", "--db", str(tmp_path / "p.db"), env=env)
    assert_one_error_line(missing, "X_BEARER_TOKEN is not set")
    bad = run_cli("live", "ingest", "--source", "kafka:topic", "--db", str(tmp_path / "p.db"))
    assert_one_error_line(bad, "--source 'kafka:topic' is not a source; use jsonl:PATH, x-stream or x-search:QUERY")
    absent = run_cli("live", "ingest", "--source", f"jsonl:{tmp_path / 'none.jsonl'}", "--db", str(tmp_path / "p.db"))
    assert_one_error_line(absent, "is not a file")
    wrong_token = run_with_env("live", "ingest", "--source", "x-stream", "--db", str(tmp_path / "p.db"),
                               "--base-url", "ftp://x", env={"X_BEARER_TOKEN": "t"})
    assert_one_error_line(wrong_token, "is not an http(s) URL")
    retention = run_cli("live", "ingest", "--source", "jsonl:x", "--db", str(tmp_path / "p.db"), "--retention", "1y")
    assert_one_error_line(retention, "--retention '1y' is not a duration")
    posts = run_cli("live", "synth", "--out", str(tmp_path / "s.jsonl"), "--posts", "0")
    assert_one_error_line(posts, "--posts 0 is too small")
