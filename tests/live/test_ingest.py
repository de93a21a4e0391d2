"""Ingest: sources into the store in batches; 20,000 posts with faults over real HTTP, none lost."""

from __future__ import annotations

import json
import threading
import time

import pytest
from x_standin import StreamFaults, XStandin

from hepta.errors import HeptaError
from hepta.live.ingest import STOP_GRACE_S, Ingest
from hepta.live.post import posts_from_response
from hepta.live.sources.base import IterableSource, SourceStats
from hepta.live.sources.replay import JsonlReplay
from hepta.live.sources.x_api import make_client
from hepta.live.sources.x_rules import Rule, StreamRules
from hepta.live.sources.x_stream import XStream
from hepta.live.store import Store
from hepta.live.synth import SAMPLE_STREAM, SynthConfig, synthesize_stream, truth_path_for

TOKEN = "test-token"
FAULTS = dict(drop=1 / 1500, keepalive_period=1 / 2000, malformed=1 / 1000, truncated=1 / 1000, duplicate=1 / 300,
              out_of_order=1 / 300)


def stream_into_store(lines, tmp_path, faults: StreamFaults, backfill_minutes: int, connects=()):
    """Runs the filtered stream from the stand-in into a new store until the stand-in has published all."""
    with XStandin(lines, faults=faults) as x:
        with make_client(TOKEN, x.base_url) as client:
            StreamRules(client).add([Rule("lang:en", tag="en"), Rule("lang:ja", tag="ja")])
        x.plan_connects(*connects)
        waits: list[float] = []
        stream = XStream(TOKEN, x.base_url, backfill_minutes=backfill_minutes, sleep=waits.append)
        store = Store(tmp_path / "posts.db")
        ingest = Ingest(store, stream)
        threading.Thread(target=lambda: (x.exhausted.wait(120), ingest.stop()), daemon=True).start()
        stats = ingest.run()
        return x, stream, store, stats


def test_20k_posts_with_faults_are_each_stored_once_and_none_is_lost(stream_20k, tmp_path):
    lines = stream_20k.lines
    x, stream, store, stats = stream_into_store(lines, tmp_path, StreamFaults(seed=11, **FAULTS), backfill_minutes=1,
                                                connects=(503, "refuse", 429))
    try:
        assert len({line["data"]["id"] for line in lines}) > 20_000
        assert all(x.injected[kind] >= 3 for kind in FAULTS), x.injected  # every kind of fault happened
        assert stream.stats.reconnects >= x.injected["drop"] + 3
        assert [kind for kind, _ in stream.waits] == ["http", "network", "rate_limit"]  # drops reconnect at once

        expected = x.matching_ids()
        originals = {line["data"]["edit_history_tweet_ids"][0] for line in lines if line["data"]["id"] in expected}
        assert store.count() == len(originals)  # one row per post (an edited post is one post)
        missing = [i for i in expected if store.get(i) is None]
        assert missing == []  # every id the stand-in published resolves, edits' ids included
        assert stats.received > len(expected)  # duplicates, backfill and out-of-order re-sends arrived...
        edits = stream_20k.truth["edits"]
        # ...and were written once each, an edit once more when it replaced its stored original
        assert len(originals) <= stats.written <= len(originals) + len(edits)
        assert stats.errors == x.injected["malformed"] + x.injected["truncated"] == stream.stats.malformed
        assert len(edits) > 100
        for original, newest in edits:  # both ids give the newest version
            assert store.get(original).id == newest and store.get(newest).id == newest
            assert store.get(original).edit_history_ids == (original, newest)
    finally:
        store.close()


def test_without_backfill_posts_published_during_a_drop_are_lost(tmp_path):
    """The control for the test above: the stand-in really loses what it publishes while the client is away."""
    lines = synthesize_stream(SynthConfig(posts=3000, seed=2, minutes=60)).lines
    x, stream, store, _ = stream_into_store(lines, tmp_path, StreamFaults(seed=3, drop=1 / 300), backfill_minutes=0)
    try:
        lost = [i for i in x.matching_ids() if store.get(i) is None]
        assert x.injected["drop"] >= 3 and len(lost) >= x.injected["drop"]
    finally:
        store.close()


class RecordingStore:
    def __init__(self):
        self.batches: list[list[str]] = []
        self.seen: set[str] = set()

    def upsert(self, posts) -> int:
        ids = [p.id for p in posts]
        self.batches.append(ids)
        new = set(ids) - self.seen
        self.seen |= new
        return len(new)


@pytest.fixture(scope="module")
def posts():
    distinct = {line["data"]["id"]: line for line in synthesize_stream(SynthConfig(posts=1200, seed=4)).lines}
    return [posts_from_response(line)[0] for line in distinct.values()]


def test_batches_by_size_and_counts_duplicates(posts):
    store = RecordingStore()
    source = [[p] for p in posts[:1200]] + [[posts[0]], [posts[1]]]
    stats = Ingest(store, IterableSource(source), batch_size=500, max_delay_s=60).run()
    assert [len(b) for b in store.batches] == [500, 500, 202]
    assert (stats.received, stats.written, stats.duplicates, stats.batches) == (1202, 1200, 2, 3)


def test_a_lone_post_is_written_after_max_delay_while_the_source_waits(posts):
    store = RecordingStore()
    release = threading.Event()

    def slow_source():
        yield [posts[0]]
        release.wait(30)  # a quiet stream: nothing more for a while
        yield [posts[1]]

    runner = threading.Thread(target=lambda: Ingest(store, IterableSource(slow_source()), max_delay_s=0.05).run())
    runner.start()
    deadline = time.monotonic() + 20
    while not store.batches and time.monotonic() < deadline:
        time.sleep(0.01)
    written_before_release = list(store.batches)
    release.set()
    runner.join(20)
    assert written_before_release == [[posts[0].id]]
    assert store.batches == [[posts[0].id], [posts[1].id]]


def test_a_failing_source_raises_after_what_arrived_is_written(posts):
    store = RecordingStore()

    def broken():
        yield posts[:3]
        raise HeptaError("X rejected the bearer token")

    with pytest.raises(HeptaError, match="bearer token"):
        Ingest(store, IterableSource(broken()), max_delay_s=60).run()
    assert store.batches == [[p.id for p in posts[:3]]]


def test_stop_ends_an_iterable_source_after_the_batch_in_hand(posts):
    store = RecordingStore()

    def endless():
        while True:
            yield posts[:10]
            time.sleep(0.001)

    ingest = Ingest(store, IterableSource(endless()), max_delay_s=0.05)
    threading.Timer(0.3, ingest.stop).start()
    stats = ingest.run()
    assert 0 < stats.received == sum(len(batch) for batch in store.batches)
    assert stats.elapsed_s < 0.3 + STOP_GRACE_S / 2  # the source ended; ingest did not wait out the grace


def test_bundled_sample_stream_ingests_into_the_store(tmp_path):
    truth = json.loads(truth_path_for(SAMPLE_STREAM).read_text(encoding="utf-8"))
    with Store(tmp_path / "sample.db") as store:
        source = JsonlReplay(SAMPLE_STREAM)
        stats = Ingest(store, source).run()
        assert stats.received == truth["lines"] and stats.errors == 0
        assert store.count() == truth["distinct_ids"] - len(truth["edits"])
        assert stats.batches > 1 and stats.max_wait_s < 1  # written batch by batch, not at the end


class SilentAfterFirstBatch:
    """A stream that hands over one batch, then holds the connection open without a byte."""

    def __init__(self, posts):
        self.posts, self.released = posts, threading.Event()
        self.stats = SourceStats()

    def stop(self):  # a real stream notices only at its next keep-alive; this one never does
        pass

    def __iter__(self):
        yield self.posts
        self.released.wait(60)


def test_stop_on_a_silent_stream_writes_what_arrived_and_returns_promptly(tmp_path):
    lines = SAMPLE_STREAM.read_text(encoding="utf-8").splitlines()[:50]
    posts = [p for line in lines for p in posts_from_response(json.loads(line))]
    source = SilentAfterFirstBatch(posts)
    with Store(tmp_path / "p.db") as store:
        ingest = Ingest(store, source)
        threading.Timer(0.5, ingest.stop).start()  # what the CLI's Ctrl-C handler does
        started = time.monotonic()
        stats = ingest.run()
        took = time.monotonic() - started
        assert store.count() == len({p.original_id for p in posts})
    source.released.set()
    assert stats.received == len(posts) and took < 0.5 + STOP_GRACE_S + 1.5
