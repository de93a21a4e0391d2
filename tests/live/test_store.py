"""Post store: idempotent upsert, edits, retention, WAL readers, Japanese retrieval quality."""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime, timedelta, timezone

import pytest

from hepta.errors import HeptaError
from hepta.live.post import Post
from hepta.live.store import FTS_TOKENIZER, Store, fts_query, index_text, query_words
from hepta.live.terms import janome_tokenizer, normalize

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


def make_post(post_id: int | str, text: str = "hello world", *, username: str = "alice", at: datetime | float = 0.0,
              lang: str = "en", likes: int = 0, views: int = 0, retweets: int = 0, replies: int = 0,
              history: tuple = (), author_id: str | None = None) -> Post:
    """A post as X would send it; `at` is a datetime or seconds after T0; history lists earlier edit ids."""
    created = at if isinstance(at, datetime) else T0 + timedelta(seconds=at)
    data = {
        "id": str(post_id), "text": text, "author_id": author_id or f"id-{username}",
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%S.") + f"{created.microsecond // 1000:03d}Z",
        "lang": lang, "edit_history_tweet_ids": [str(h) for h in history] + [str(post_id)],
        "public_metrics": {"like_count": likes, "retweet_count": retweets, "reply_count": replies,
                           "quote_count": 0, "impression_count": views, "bookmark_count": 0},
    }
    return Post.from_x(data, {"users": [{"id": data["author_id"], "username": username}]})


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "posts.db") as s:
        yield s


def test_upsert_counts_written_posts_and_stores_duplicates_once(store):
    posts = [make_post(i, f"post number {i}", at=i) for i in range(1, 101)]
    assert store.upsert(posts) == 100
    assert store.upsert(posts[:50] + posts[:50]) == 0  # seen before, and twice in one batch
    assert store.upsert([make_post(101, "one more", at=200), make_post(101, "one more", at=200)]) == 1
    assert store.count() == 101
    got = store.get("7")
    assert got == posts[6]  # the whole Post comes back, raw JSON included
    assert store.get("999") is None


def test_newest_edit_replaces_and_every_edit_id_resolves(store):
    original = make_post(10, "the launch is on friday", at=0)
    edit1 = make_post(11, "the launch is on saturday", at=60, history=(10,))
    edit2 = make_post(12, "the launch is on sunday", at=120, history=(10, 11))
    assert store.upsert([original]) == 1
    assert store.upsert([edit2]) == 1  # written: it replaces the stored version
    assert store.upsert([edit1, original]) == 0  # older versions arriving late change nothing
    assert store.count() == 1
    for post_id in ("10", "11", "12"):
        assert store.get(post_id).text == "the launch is on sunday"
    # the index forgot the replaced text and knows the new one
    assert [p.id for p, _ in store.matches(fts_query(["friday"]))] == []
    assert [p.id for p, _ in store.matches(fts_query(["sunday"]))] == ["12"]


def test_edit_before_original_and_both_in_one_batch(store):
    assert store.upsert([make_post(21, "v2 text", history=(20,)), make_post(20, "v1 text")]) == 1
    assert store.get("20").text == store.get("21").text == "v2 text"


def test_retention_drops_posts_older_than_the_window(tmp_path):
    with Store(tmp_path / "r.db", retention=timedelta(minutes=10)) as store:
        store.upsert([make_post(i, f"retained word{i}", at=i * 60) for i in range(5)])  # minutes 0..4
        assert store.count() == 5
        store.upsert([make_post(100, "retained late", at=14 * 60)])  # the window is now [4:00, 14:00]
        kept = sorted(p.id for p, _ in store.matches(fts_query(["retained"])))
        assert kept == ["100", "4"]
        assert store.count() == 2
        assert store.upsert([make_post(101, "retained too old", at=60)]) == 0  # outside the window on arrival


def test_filters_are_exact_on_dates_handles_and_thresholds(store):
    posts = [make_post(i, f"rocket launch {i}", username=f"user{i % 3}", at=i * 3600, likes=i, views=10 * i)
             for i in range(1, 48)]
    store.upsert(posts)
    start, end = T0 + timedelta(hours=5), T0 + timedelta(hours=30)
    got = store.matches(fts_query(["rocket"]), start=start, end=end, handles=["@User1"], min_likes=10,
                        min_views=150)
    expected = {p.id for p in posts if start <= p.created_at < end and p.username == "user1" and p.like_count >= 10
                and p.impression_count >= 150}
    assert {p.id for p, _ in got} == expected and expected
    excluded = store.matches(fts_query(["rocket"]), excluded_handles=["user0", "USER2"])
    assert {p.id for p, _ in excluded} == {p.id for p in posts if p.username == "user1"}


def test_matches_are_newest_first_and_limited(store):
    store.upsert([make_post(i, "same words here", at=(i * 37) % 100) for i in range(1, 101)])  # out of order
    got = store.matches(fts_query(["words"]), limit=10)
    times = [p.created_at for p, _ in got]
    assert len(got) == 10 and times == sorted(times, reverse=True)
    assert times[0] == max(p.created_at for p, _ in store.matches(fts_query(["words"]), limit=1000))


def test_posts_in_the_same_millisecond_all_stored(store):
    posts = [make_post(i, f"same ms {i}") for i in range(1, 1201)]  # more posts than key slots in one ms
    assert store.upsert(posts[:700]) == 700 and store.upsert(posts[700:]) == 500 and store.count() == 1200
    assert {store.get(str(i)).text for i in (1, 600, 1200)} == {"same ms 1", "same ms 600", "same ms 1200"}
    assert len(store.matches(fts_query(["same"]), limit=2000)) == 1200


def test_reader_reads_while_a_writer_holds_its_transaction(tmp_path):
    path = tmp_path / "wal.db"
    store = Store(path)
    store.upsert([make_post(i, "first batch", at=i) for i in range(1, 11)])
    store._writer.execute("BEGIN IMMEDIATE")
    store._writer.execute("DELETE FROM posts")  # uncommitted
    results: dict = {}

    def read():  # another thread: its own connection; and a store opened anew, as a server request would
        results["count"] = store.count()
        results["match"] = len(store.matches(fts_query(["batch"])))
        with Store(path, create=False) as opened_now:
            results["opened"] = opened_now.count()

    thread = threading.Thread(target=read)
    thread.start()
    thread.join(timeout=5)
    assert results == {"count": 10, "match": 10, "opened": 10}  # the last committed state, without waiting
    store._writer.execute("ROLLBACK")
    # a second process-style reader on its own connection while a batch commits
    other = sqlite3.connect(path, timeout=0)
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other.execute("BEGIN")
    assert other.execute("SELECT count(*) FROM posts").fetchone()[0] == 10  # read snapshot held open
    assert store.upsert([make_post(100 + i, "second batch", at=100 + i) for i in range(10)]) == 10  # not blocked
    assert other.execute("SELECT count(*) FROM posts").fetchone()[0] == 10
    other.execute("COMMIT")
    assert other.execute("SELECT count(*) FROM posts").fetchone()[0] == 20
    other.close()
    store.close()


def test_readers_in_other_threads_see_whole_batches_while_a_writer_ingests(store):
    batches = [[make_post(b * 100 + i + 1, f"stream word{b}", at=b * 100 + i) for i in range(100)] for b in range(30)]
    seen: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def read():
        try:
            while not done.is_set():
                seen.append(store.count())
                store.matches(fts_query(["stream"]), limit=10)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for thread in readers:
        thread.start()
    for batch in batches:
        store.upsert(batch)
    done.set()
    for thread in readers:
        thread.join(timeout=10)
    assert errors == [] and len(seen) > 2
    assert all(count % 100 == 0 for count in seen)  # a batch is seen whole or not at all
    assert store.count() == 3000


def test_opening_missing_or_foreign_files_says_what_to_do(tmp_path):
    with pytest.raises(HeptaError, match="no post store"):
        Store(tmp_path / "missing.db", create=False)
    foreign = tmp_path / "foreign.db"
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(HeptaError, match="not a hepta post store"):
        Store(foreign)


def test_english_words_are_stemmed_both_ways(store):
    store.upsert([make_post(1, "Earthquakes hit the coast"), make_post(2, "An earthquake was felt")])
    assert {p.id for p, _ in store.matches(fts_query(query_words("earthquake")))} == {"1", "2"}


# --- Japanese retrieval: bigrams (the store's) vs janome words vs FTS5 trigram ----------------------

JA_POSTS = [
    "東京都で大きな地震がありました。揺れが長かった", "京都の紅葉がきれいです。嵐山に行ってきた",
    "地震速報：震度4の揺れを観測", "東京タワーの夜景が最高", "新型ロケットの打ち上げが成功した！",
    "ロケット打ち上げは延期になりました", "今日は雨。傘を忘れた", "大雨警報が出ています。川に近づかないで",
    "新しいスマホを買った。カメラがすごい", "スマートフォンの電池がすぐ切れる", "京都駅で新幹線が遅れている",
    "新幹線が地震の影響で運転見合わせ", "コロナの感染者が増えている", "ワクチン接種の予約が取れた",
    "円安が進んで物価が上がる", "日経平均株価が最高値を更新", "株価が急落して不安", "猫がかわいすぎる",
    "うちの猫が寝ている写真", "ラーメン屋に行列ができていた", "この店のラーメンは本当においしい",
    "選挙の投票に行きました", "投票率が低いのは問題だ", "台風10号が接近中", "台風の影響で飛行機が欠航",
    "新作ゲームの発売日が決まった", "ゲーム実況を見ながら寝落ち", "東京駅は人が多い", "花火大会が中止になった",
    "桜が満開、お花見日和", "梅雨入りが発表された", "新宿で火事、煙が見える",
]
# query -> the posts about it (by meaning: 東京都 is about Tokyo, not about Kyoto)
JA_RELEVANT = {
    "地震": {0, 2, 11}, "京都": {1, 10}, "東京": {0, 3, 27}, "ロケット": {4, 5}, "雨": {6, 7, 30},
    "新幹線": {10, 11}, "株価": {15, 16}, "猫": {17, 18}, "ラーメン": {19, 20}, "投票": {21, 22},
    "台風": {23, 24}, "ゲーム": {25, 26}, "打ち上げ": {4, 5}, "花火": {28}, "感染者": {12}, "火事": {31},
    "スマホ": {8}, "寝落ち": {26},
}


def _janome_words(text: str) -> list[str]:
    return [t.surface for t in janome_tokenizer().tokenize(normalize(text)) if t.surface.strip()]


def _phrase(words: list[str]) -> str:
    return '"' + " ".join(w.replace('"', '""') for w in words) + '"'


METHODS = {
    # name: (tokenizer, document rewrite, query -> MATCH expression or None when it cannot be asked)
    "bigram": (FTS_TOKENIZER, index_text, lambda q: fts_query(query_words(q))),
    "janome": ("unicode61", lambda t: " ".join(_janome_words(t)), lambda q: _phrase(_janome_words(q))),
    "trigram": ("trigram", normalize, lambda q: _phrase([normalize(q)]) if len(q) >= 3 else None),
}


def retrieval_quality(method: str) -> tuple[float, float]:
    """Micro-averaged precision and recall of the labelled queries over JA_POSTS."""
    tokenizer, rewrite, ask = METHODS[method]
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE VIRTUAL TABLE t USING fts5(body, tokenize='{tokenizer}')")
    db.executemany("INSERT INTO t (rowid, body) VALUES (?, ?)", [(i, rewrite(t)) for i, t in enumerate(JA_POSTS)])
    found = relevant_found = relevant = 0
    for query, wanted in JA_RELEVANT.items():
        expression = ask(query)
        got = set() if expression is None else {r[0] for r in db.execute("SELECT rowid FROM t WHERE t MATCH ?",
                                                                          (expression,))}
        found += len(got)
        relevant_found += len(got & wanted)
        relevant += len(wanted)
    return (relevant_found / found if found else 0.0), relevant_found / relevant


def test_japanese_retrieval_bigrams_beat_janome_and_trigram_on_recall():
    quality = {method: retrieval_quality(method) for method in METHODS}
    print({m: f"P={p:.3f} R={r:.3f}" for m, (p, r) in quality.items()})
    # measured: bigram P=0.971 R=1.000, janome P=1.000 R=0.941, trigram P=1.000 R=0.382
    precision, recall = quality["bigram"]
    assert recall == 1.0 and precision >= 0.95  # its one miss: 京都 found inside 東京都
    assert quality["janome"][1] < 0.97  # misses words it splits differently in context (雨 in 大雨, 梅雨)
    assert quality["trigram"][1] < 0.5  # words of one or two characters cannot be asked


def test_japanese_posts_are_searchable_in_the_store(store):
    store.upsert([make_post(i + 1, text, lang="ja", at=i) for i, text in enumerate(JA_POSTS)])
    for query in ("地震", "雨", "新幹線", "寝落ち"):
        got = {int(p.id) - 1 for p, _ in store.matches(fts_query(query_words(query)))}
        assert got == JA_RELEVANT[query], query
    mixed = store.matches(fts_query(query_words("ロケット 打ち上げ")))
    assert {int(p.id) - 1 for p, _ in mixed} == {4, 5}


def test_processes_opening_a_new_store_at_once_all_get_the_whole_store(tmp_path):
    """An ingest creating a store while a reader opens it: the reader never sees tables without the
    store's version (which would read as 'not a hepta post store') nor a bare lock error."""
    failed = []
    for trial in range(40):
        path = tmp_path / f"new{trial}.db"

        def open_store():
            try:
                with Store(path) as store:
                    store.count()
            except Exception as e:  # noqa: BLE001 - any failure to open is what this test looks for
                failed.append(repr(e))

        openers = [threading.Thread(target=open_store) for _ in range(4)]
        for t in openers:
            t.start()
        for t in openers:
            t.join()
    assert not failed, failed[:3]
