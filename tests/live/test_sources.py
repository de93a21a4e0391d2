"""Sources over real HTTP against the local X stand-in: filtered stream, rules, recent search, replay."""

from __future__ import annotations

import argparse
import json
import threading

import pytest
from x_standin import StreamFaults, XStandin

from hepta.errors import HeptaError
from hepta.live.sources.replay import FAST_CHUNK, JsonlReplay
from hepta.live.sources.x_api import bearer_token, make_client
from hepta.live.sources.x_rules import Rule, StreamRules
from hepta.live.sources.x_search import XSearch
from hepta.live.sources.x_stream import XStream
from hepta.live.synth import SynthConfig, synthesize_stream

TOKEN = "test-token"


@pytest.fixture(scope="module")
def small():
    return synthesize_stream(SynthConfig(posts=300, seed=3, minutes=60)).lines


def add_rules(standin: XStandin, *values: str | tuple[str, str]) -> list[Rule]:
    """Adds rules given as a value (tagged with what follows its last ":") or as (value, tag)."""
    pairs = [(v, v.split(":")[-1]) if isinstance(v, str) else v for v in values or ("lang:en", "lang:ja")]
    with make_client(TOKEN, standin.base_url) as client:
        return StreamRules(client).add([Rule(value, tag=tag) for value, tag in pairs])


def read_all(stream: XStream, standin: XStandin) -> list:
    """Every post the stream yields until the stand-in has published everything."""
    stopper = threading.Thread(target=lambda: (standin.exhausted.wait(60), stream.stop()), daemon=True)
    stopper.start()
    return [post for batch in stream for post in batch]


# --- filtered stream -------------------------------------------------------------------------------


def test_reconnect_waits_follow_x_documented_schedule(small, fake_clock):
    with XStandin(small, clock=fake_clock, rate_limit_reset_s=30) as x:
        add_rules(x)
        x.plan_connects(*["refuse"] * 66, *[503] * 8, *[429] * 3, "keepalive-only", "refuse", 503, 429)
        stream = XStream(TOKEN, x.base_url, sleep=fake_clock.sleep, clock=fake_clock)
        posts = read_all(stream, x)
    linear = [("network", min(0.25 * n, 16.0)) for n in range(1, 67)]
    assert linear[63:] == [("network", 16.0)] * 3  # +250 ms per attempt, capped at 16 s
    exponential = [("http", w) for w in (5, 10, 20, 40, 80, 160, 320, 320)]  # from 5 s, doubling, capped at 320 s
    rate_limited = [("rate_limit", w) for w in (60, 120, 240)]  # from a minute, doubling
    # a connection that delivered (keep-alives, then a clean close) is retried at once and resets every schedule
    after_success = [("network", 0.25), ("http", 5), ("rate_limit", 60)]
    assert stream.waits == linear + exponential + rate_limited + after_success
    assert fake_clock.sleeps == [w for _, w in stream.waits]
    assert {p.id for p in posts} == x.matching_ids()
    assert stream.stats.connections == 2 and stream.stats.reconnects == 66 + 8 + 3 + 1 + 3  # attempts after the first


def test_429_waits_at_least_until_x_rate_limit_reset(small, fake_clock):
    with XStandin(small, clock=fake_clock, rate_limit_reset_s=500) as x:
        add_rules(x)
        x.plan_connects(*[429] * 5)
        stream = XStream(TOKEN, x.base_url, sleep=fake_clock.sleep, clock=fake_clock)
        read_all(stream, x)
    # the reset time (500 s away) is a floor under 60, 120, 240, 480; 960 goes past it
    assert stream.waits == [("rate_limit", w) for w in (500, 500, 500, 500, 960)]


def test_keepalives_keep_a_quiet_connection_and_silence_past_the_read_timeout_reconnects(small):
    # 1.5 s of keep-alives only, against a 1 s read timeout: each gap is a quarter of it, so a busy host
    # cannot turn a keep-alive into a timeout, and no byte for a whole second is plainly a stall
    faults = StreamFaults(keepalive_run=6, keepalive_gap_s=0.25)
    with XStandin(small, faults=faults) as x:
        add_rules(x)
        x.plan_connects("keepalive-only", "stall")
        sleeps = []
        stream = XStream(TOKEN, x.base_url, read_timeout_s=1.0, sleep=sleeps.append)
        posts = read_all(stream, x)
    assert stream.stats.keepalives >= 6  # longer than the read timeout, yet no reconnect wait for it
    assert sleeps == [0.25]  # the stall: no byte in 1 s is a network error
    assert {p.id for p in posts} == x.matching_ids()


def test_a_connection_that_closes_before_sending_anything_backs_off(small):
    with XStandin(small, faults=StreamFaults(keepalive_run=0)) as x:
        add_rules(x)
        x.plan_connects(*["keepalive-only"] * 3)  # 200, no keep-alive, clean close
        sleeps = []
        stream = XStream(TOKEN, x.base_url, sleep=sleeps.append)
        read_all(stream, x)
    # a busy host can add one more dropped connect after the planned three; it continues the same line
    assert stream.waits[:3] == [("network", 0.25), ("network", 0.5), ("network", 0.75)]
    assert stream.waits == [("network", 0.25 * (i + 1)) for i in range(len(stream.waits))]


def test_malformed_and_truncated_lines_are_skipped_and_counted(small):
    faults = StreamFaults(seed=5, malformed=0.05, truncated=0.05)
    with XStandin(small, faults=faults) as x:
        add_rules(x)
        stream = XStream(TOKEN, x.base_url)
        posts = read_all(stream, x)
    assert x.injected["malformed"] > 3 and x.injected["truncated"] > 3
    assert stream.stats.malformed == x.injected["malformed"] + x.injected["truncated"]
    assert {p.id for p in posts} == x.matching_ids() and stream.waits == []


def test_posts_carry_the_tags_of_the_rules_they_matched(small):
    with XStandin(small) as x:
        add_rules(x, ("lang:ja", "ja"), ("-lang:ja", "not-ja"))
        posts = read_all(XStream(TOKEN, x.base_url), x)
    assert posts and all(p.matching_rules == (("ja",) if p.lang == "ja" else ("not-ja",)) for p in posts)
    assert {p.lang for p in posts} == {"en", "ja"}


def test_bad_token_is_a_user_error_naming_the_variable(small):
    with XStandin(small) as x:
        with pytest.raises(HeptaError, match="HTTP 401.*X_BEARER_TOKEN"):
            list(XStream("wrong", x.base_url))
    with pytest.raises(HeptaError, match="X_BEARER_TOKEN is not set; export X_BEARER_TOKEN="):
        bearer_token({})
    assert bearer_token({"X_BEARER_TOKEN": " abc "}) == "abc"


# --- rules -------------------------------------------------------------------------------------------


def test_rules_add_list_delete_with_dry_run(small):
    with XStandin(small) as x, make_client(TOKEN, x.base_url) as client:
        rules = StreamRules(client)
        assert rules.list() == []
        checked = rules.add([Rule("#AI lang:en", tag="ai")], dry_run=True)
        assert [r.value for r in checked] == ["#AI lang:en"] and rules.list() == []  # validated, not created
        created = rules.add([Rule("#AI lang:en", tag="ai"), Rule("from:nasa")])
        assert [(r.value, r.tag) for r in rules.list()] == [("#AI lang:en", "ai"), ("from:nasa", None)]
        assert all(r.id for r in created)
        assert rules.add([Rule("#AI lang:en", tag="ai")]) == []  # an existing rule is no error
        with pytest.raises(HeptaError, match="did not accept the stream rule '\\(unbalanced'.*Unbalanced"):
            rules.add([Rule("(unbalanced")])
        assert rules.delete([created[0].id], dry_run=True) == 1 and len(rules.list()) == 2
        assert rules.delete([created[0].id, "123"]) == 1
        assert [r.value for r in rules.list()] == ["from:nasa"]
        assert [r.value for r in rules.ensure(["from:nasa", "#rocket"])] == ["from:nasa", "#rocket"]


# --- recent search -----------------------------------------------------------------------------------


def test_search_pages_with_next_token_then_polls_with_since_id(small, fake_clock):
    first, later = small[:200], small[200:]
    with XStandin(first, clock=fake_clock) as x:
        def between_polls(seconds):
            fake_clock.sleep(seconds)
            if len(fake_clock.sleeps) == 1:
                x.add_posts(later)
            else:
                search.stop()

        search = XSearch(TOKEN, "lang:ja", x.base_url, max_results=10, poll_s=30, sleep=between_polls,
                         clock=fake_clock)
        pages = list(search)
        requests = list(x.search_requests)
    ja_first = {line["data"]["id"] for line in first if line["data"]["lang"] == "ja"}
    ja_later = {line["data"]["id"] for line in later if line["data"]["lang"] == "ja"}
    got = [p.id for page in pages for p in page]
    assert len(got) == len(set(got)) and set(got) == ja_first | ja_later  # each post once
    assert all(len(page) <= 10 for page in pages) and all(p.lang == "ja" for page in pages for p in page)
    first_pass = [r for r in requests if "since_id" not in r]
    assert len(first_pass) == -(-len(ja_first) // 10)  # ceil: one request per page
    assert all("next_token" in r for r in first_pass[1:])
    polls = [r for r in requests if "since_id" in r]
    assert polls[0]["since_id"] == max(ja_first, key=int)  # the first pass's newest_id
    assert search.since_id == max(ja_first | ja_later, key=int)
    assert fake_clock.sleeps[:2] == [30, 30]


def test_search_honours_rate_limit_headers_429_and_503(small, fake_clock):
    with XStandin(small, clock=fake_clock, search_limit=3, search_window_s=900, rate_limit_reset_s=30) as x:
        x.plan_search(503, 429)
        search = XSearch(TOKEN, "lang:en", x.base_url, max_results=10, sleep=fake_clock.sleep, clock=fake_clock)
        got = [p.id for page in search for p in page]
    expected = {line["data"]["id"] for line in small if line["data"]["lang"] == "en"}
    assert set(got) == expected and len(got) == len(expected)
    kinds = [k for k, _ in search.waits]
    assert search.waits[:2] == [("http", 5.0), ("rate_limit", 60.0)]
    # three requests per 900 s window: every third request waits for the window to reset
    window_waits = [w for k, w in search.waits if k == "rate_limit_window"]
    assert len(window_waits) == (-(-len(expected) // 10) - 1) // 3 and all(0 < w <= 900 for w in window_waits)
    assert "rate_limit" not in kinds[2:]  # never ran into a 429 by itself


def test_search_rejects_bad_input_with_clear_errors(small):
    with pytest.raises(HeptaError, match="query is empty"):
        XSearch(TOKEN, "  ")
    with pytest.raises(HeptaError, match="max_results 5 is outside"):
        XSearch(TOKEN, "a", max_results=5)
    with XStandin(small) as x:
        with pytest.raises(HeptaError, match="HTTP 401"):
            list(XSearch("wrong", "a", x.base_url))


# --- replay -------------------------------------------------------------------------------------------


def write_jsonl(path, lines, extra=()):
    with path.open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
        for raw in extra:
            f.write(raw + "\n")
    return path


@pytest.mark.parametrize("speed", [1.0, 60.0])
def test_replay_paces_posts_by_created_at_scaled_by_speed(tmp_path, small, fake_clock, speed):
    path = write_jsonl(tmp_path / "s.jsonl", small[:100])
    replay = JsonlReplay(path, speed=speed, sleep=fake_clock.sleep, clock=fake_clock)
    start = fake_clock.now
    seen = []
    for batch in replay:
        seen.append((fake_clock.now - start, batch[0]))
    t0 = seen[0][1].created_at
    for elapsed, post in seen:  # each post goes out when its recorded offset, scaled, has passed
        assert elapsed == pytest.approx(max(0.0, (post.created_at - t0).total_seconds() / speed), abs=1e-6)
    span = (max(p.created_at for _, p in seen) - t0).total_seconds()
    assert sum(fake_clock.sleeps) == pytest.approx(span / speed)


def test_replay_as_fast_as_possible_chunks_and_skips_bad_lines(tmp_path, small):
    extra = ["", "not json", '{"data": {"id": "1"}}', '{"meta": {"result_count": 0}}']
    path = write_jsonl(tmp_path / "s.jsonl", small, extra)
    slept = []
    replay = JsonlReplay(path, sleep=slept.append)
    batches = list(replay)
    assert [len(b) for b in batches] == ([FAST_CHUNK] * (len(small) // FAST_CHUNK) + [len(small) % FAST_CHUNK]
                                         if len(small) > FAST_CHUNK else [len(small)])
    assert slept == [] and replay.stats.malformed == 2 and replay.stats.keepalives == 1
    assert [p.id for b in batches for p in b] == [line["data"]["id"] for line in small]
    with pytest.raises(HeptaError, match="is not a file"):
        JsonlReplay(tmp_path / "missing.jsonl")
    with pytest.raises(HeptaError, match="--speed -1 is negative"):
        JsonlReplay(path, speed=-1)


def test_the_x_stream_opens_from_its_declared_options_alone_and_lists_its_rules(small, monkeypatch, capsys):
    from hepta.live.sources import registry

    monkeypatch.setenv("X_BEARER_TOKEN", TOKEN)
    kind, value = registry.find_source("x-stream")
    with XStandin(small) as x:
        # only the flags the source declares, as a caller other than `hepta live ingest` passes them
        options = argparse.Namespace(**{o.flag.lstrip("-").replace("-", "_"): o.default for o in kind.options})
        options.base_url, options.rule = x.base_url, ["lang:en"]
        kind.open(value, options)
        assert "stream rules: lang:en" in capsys.readouterr().err
        kind.open(value, argparse.Namespace(**vars(options), quiet=True))  # the ingest command's --quiet
        assert capsys.readouterr().err == ""
