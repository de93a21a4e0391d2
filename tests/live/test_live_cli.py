"""`hepta live trends | opinion | accounts | search` on a store filled from the synthetic stream."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta

import pytest

from hepta.cli import main
from hepta.live.post import posts_from_response
from hepta.live.store import Store
from hepta.live.synth import SynthConfig, synthesize_stream


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """A store holding a 2,000-post synthetic stream, and the stream's ground truth."""
    result = synthesize_stream(SynthConfig(posts=2000, seed=3, minutes=240))
    path = tmp_path_factory.mktemp("cli") / "posts.db"
    with Store(path) as store:
        store.upsert([p for line in result.lines for p in posts_from_response(line)])
    return path, result.truth


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_trends_json_and_table(filled, capsys):
    path, truth = filled
    burst = truth["bursts"][0]
    at = (datetime.fromisoformat(burst["start"]) + timedelta(minutes=12)).isoformat()
    code, out, _ = run(capsys, "live", "trends", "--db", str(path), "--at", at, "--json")
    report = json.loads(out)
    assert code == 0 and burst["term"] in [t["term"] for t in report["trends"]]
    assert report["window_s"] == 900 and report["num_posts"] > 0
    code, out, _ = run(capsys, "live", "trends", "--db", str(path), "--at", at, "--lang", burst["lang"],
                       "--window", "15m")
    assert code == 0 and burst["term"] in out and "https://x.com/i/status/" in out


def test_opinion_json_and_table(filled, capsys):
    path, truth = filled
    term = truth["bursts"][1]["term"]
    code, out, _ = run(capsys, "live", "opinion", term, "--db", str(path), "--json")
    report = json.loads(out)
    assert code == 0 and report["num_posts"] >= 100 and sum(report["counts"].values()) == report["num_posts"]
    assert abs(sum(report["shares"].values()) - 1) < 1e-3
    code, out, _ = run(capsys, "live", "opinion", term, "--db", str(path), "--window", "1h")
    assert code == 0 and "positive" in out and "negative" in out and "neutral" in out


def test_accounts_json_and_table(filled, capsys):
    path, truth = filled
    handles = [a["username"] for a in truth["accounts"] if a["influential"]][:2]
    code, out, _ = run(capsys, "live", "accounts", *handles, "@nobody_here", "--db", str(path), "--json")
    reports = json.loads(out)["accounts"]
    assert code == 0 and [r["handle"] for r in reports] == [h.lower() for h in handles] + ["nobody_here"]
    assert reports[0]["num_posts"] > 0 and reports[2]["num_posts"] == 0
    code, out, _ = run(capsys, "live", "accounts", handles[0], "--db", str(path), "--timeline", "2")
    assert code == 0 and f"@{handles[0]}" in out and "newest posts" in out


def test_search_filters_and_citations(filled, capsys):
    path, truth = filled
    burst = truth["bursts"][0]
    day = burst["start"][:10]
    code, out, _ = run(capsys, "live", "search", burst["term"], "--db", str(path), "--from", day, "--to", day,
                       "--max", "7", "--min-likes", "3", "--json")
    result = json.loads(out)
    assert code == 0 and result["num_sources_used"] == len(result["posts"]) == 7
    assert all(p["like_count"] >= 3 and p["created_at"].startswith(day) for p in result["posts"])
    assert result["citations"] == [p["url"] for p in result["posts"]]
    handle = result["posts"][0]["username"]
    code, out, _ = run(capsys, "live", "search", burst["term"], "--db", str(path), "--handles", handle, "--json")
    assert {p["username"] for p in json.loads(out)["posts"]} == {handle}
    code, out, _ = run(capsys, "live", "search", burst["term"], "--db", str(path), "--exclude-handles", handle,
                       "--json")
    assert handle not in {p["username"] for p in json.loads(out)["posts"]}
    code, out, _ = run(capsys, "live", "search", burst["term"], "--db", str(path), "--max", "2")
    assert code == 0 and out.count("https://x.com/i/status/") == 2


@pytest.mark.parametrize("argv, message", [
    (["live", "trends", "--db", "{missing}"], "no post store at"),
    (["live", "opinion", "x", "--db", "{db}", "--window", "soon"], "--window 'soon' is not a duration"),
    (["live", "trends", "--db", "{db}", "--window", "0m"], "--window '0m' must be longer than zero"),
    (["live", "trends", "--db", "{db}", "--at", "yesterday"], "--at 'yesterday' is not an ISO time"),
    (["live", "search", "x", "--db", "{db}", "--from", "2026/01/01"], "--from must be an ISO date"),
    (["live", "search", "x", "--db", "{db}", "--max", "51"], "--max must be an integer from 1 to 50"),
    (["live", "search", "x", "--db", "{db}", "--handles", "a", "--exclude-handles", "b"],
     "--handles and --exclude-handles cannot be used together"),
    (["live", "search", "x", "--db", "{db}", "--min-likes", "-1"], "--min-likes must be a non-negative integer"),
    (["live", "accounts", "@", "--db", "{db}"], "give at least one handle"),
])
def test_bad_input_is_one_error_line(filled, capsys, tmp_path, argv, message):
    path, _ = filled
    argv = [a.format(db=path, missing=tmp_path / "missing.db") for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 1 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "missing.db").exists()  # reading never creates a store


def test_live_commands_load_no_torch(filled):
    path, _ = filled
    code = ("import sys; from hepta.cli import main; "
            f"assert main(['live', 'search', 'x', '--db', {str(path)!r}, '--json']) == 0; "
            f"assert main(['live', 'trends', '--db', {str(path)!r}, '--json']) == 0; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
