"""API keys in their SQLite file: hashed at rest, authenticated, revoked, and usage totals that add up."""

import sqlite3
import threading

import pytest

from hepta.errors import HeptaError
from hepta.serve.keys import KeyStore, bearer_token, hash_key


@pytest.fixture
def store(tmp_path):
    with KeyStore(tmp_path / "keys.db", create=True) as s:
        yield s


def test_new_key_authenticates_and_others_do_not(store):
    raw = store.add("alice", rpm=60, tpm=1000)
    other = store.add("bob")
    assert raw.startswith("hk-") and len(raw) == 46 and raw != other
    record = store.authenticate(raw)
    assert (record.name, record.rpm, record.tpm, record.revoked) == ("alice", 60, 1000, False)
    assert record.prefix == raw[:11] and record.display == raw[:11] + "..."
    assert store.authenticate(other).name == "bob"
    assert store.authenticate(raw[:-1] + ("A" if raw[-1] != "A" else "B")) is None  # one character off
    assert store.authenticate("hk-" + "x" * 43) is None
    for junk in ("", "Bearer " + raw, raw + " ", None, 42, raw[:-1] + "\udc80", raw[:-1] + "é"):
        assert store.authenticate(junk) is None


def test_bearer_token_reads_the_openai_clients_header(store):
    raw = store.add("alice")
    assert store.authenticate(bearer_token(f"Bearer {raw}")).name == "alice"
    assert bearer_token(f"bearer   {raw} ") == raw
    for header in (None, "", "Bearer", "Bearer  ", f"Basic {raw}", raw):
        assert bearer_token(header) is None


def test_revoked_key_stops_working_and_its_name_can_be_reused(store):
    raw = store.add("alice")
    assert store.revoke("alice").revoked
    assert store.authenticate(raw) is None
    with pytest.raises(HeptaError, match="no active key named 'alice'"):
        store.revoke("alice")
    new = store.add("alice")
    assert store.authenticate(new).name == "alice" and store.authenticate(raw) is None
    assert [(k.name, k.revoked) for k in store.list()] == [("alice", True), ("alice", False)]


def test_file_holds_hashes_never_keys(tmp_path):
    path = tmp_path / "keys.db"
    with KeyStore(path, create=True) as store:
        keys = [store.add(f"k{i}") for i in range(5)]
        store.record_usage(store.authenticate(keys[0]).id, "tiny", 3, 4, "/v1/completions")
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir())  # the database and any WAL left beside it
    for raw in keys:
        assert raw.encode() not in data
        assert raw[3:].encode() not in data  # not even the random part alone
        assert hash_key(raw) in data  # what is kept instead
    assert (path.stat().st_mode & 0o777) == 0o600


def test_a_running_server_sees_revocation_from_another_connection(tmp_path):
    path = tmp_path / "keys.db"
    with KeyStore(path, create=True) as server:
        raw = server.add("alice")
        assert server.authenticate(raw) is not None
        with KeyStore(path) as cli:  # `hepta keys revoke` in another process
            cli.revoke("alice")
        assert server.authenticate(raw) is None


def test_two_writers_on_one_file_lose_nothing(tmp_path):
    """The server recording usage while `hepta keys add` runs in another process."""
    path = tmp_path / "keys.db"
    with KeyStore(path, create=True) as server, KeyStore(path) as cli:
        key_id = server.authenticate(server.add("app")).id
        errors = []

        def record():
            try:
                for _ in range(300):
                    server.record_usage(key_id, "tiny", 1, 2, "/v1/completions")
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        recorder = threading.Thread(target=record)
        recorder.start()
        added = [cli.add(f"user{i}") for i in range(40)]
        recorder.join()
        assert errors == []
        assert [u.requests for u in server.usage("app")] == [300]
        assert all(server.authenticate(raw).name == f"user{i}" for i, raw in enumerate(added))


def test_duplicate_name_is_refused_and_nothing_is_lost(store):
    raw = store.add("alice", rpm=5)
    before = store.list()
    with pytest.raises(HeptaError, match="a key named 'alice' already exists"):
        store.add("alice", rpm=99)
    assert store.list() == before
    assert store.authenticate(raw).rpm == 5


@pytest.mark.parametrize("name", ["", " alice", "a b", "-x", "x" * 65, "naïve", "a/b"])
def test_bad_names_are_refused(store, name):
    with pytest.raises(HeptaError, match="is not allowed"):
        store.add(name)
    assert store.list() == []


@pytest.mark.parametrize("limits", [{"rpm": 0}, {"tpm": -5}, {"rpm": 1.5}, {"tpm": True}])
def test_bad_limits_are_refused(store, limits):
    with pytest.raises(HeptaError, match="must be a whole number of at least 1, or None for no limit"):
        store.add("alice", **limits)
    assert store.list() == []


def test_default_limits_are_kept_in_the_file(tmp_path):
    with KeyStore(tmp_path / "keys.db", create=True) as store:
        assert store.default_limits() == (None, None)
        store.set_default_limits(rpm=30, tpm=None)
        with pytest.raises(HeptaError, match="tpm must be"):
            store.set_default_limits(rpm=30, tpm=0)
    with KeyStore(tmp_path / "keys.db") as store:
        assert store.default_limits() == (30, None)


def test_set_limits_changes_the_active_key(store):
    raw = store.add("alice", rpm=10)
    assert store.set_limits("alice", rpm=None, tpm=500).tpm == 500
    record = store.authenticate(raw)
    assert (record.rpm, record.tpm) == (None, 500)
    with pytest.raises(HeptaError, match="no active key named 'bob'"):
        store.set_limits("bob", rpm=1, tpm=1)


def test_concurrent_usage_from_threads_sums_exactly(store):
    ids = [store.authenticate(store.add(name)).id for name in ("alice", "bob")]
    num_threads, per_thread = 8, 150

    def worker(t):
        for i in range(per_thread):
            store.record_usage(ids[t % 2], "tiny" if i % 3 else "other", 7, 11, "/v1/chat/completions")
            store.authenticate("hk-" + "y" * 43)  # reads interleaved with the writes

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(num_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    totals = {u.name: u for u in store.usage()}
    for name in ("alice", "bob"):
        expected_requests = num_threads // 2 * per_thread
        assert totals[name].requests == expected_requests
        assert totals[name].prompt_tokens == 7 * expected_requests
        assert totals[name].completion_tokens == 11 * expected_requests
        assert totals[name].total_tokens == 18 * expected_requests


def test_usage_persists_across_reopen_and_keeps_revoked_keys(tmp_path):
    path = tmp_path / "keys.db"
    with KeyStore(path, create=True) as store:
        a = store.authenticate(store.add("alice")).id
        store.add("idle")
        store.record_usage(a, "tiny", 10, 5, "/v1/chat/completions")
        store.record_usage(a, "tiny", 1, 2, "/v1/completions")
        store.revoke("alice")
    with KeyStore(path) as store:
        totals = store.usage()
        assert [(u.name, u.revoked, u.requests, u.prompt_tokens, u.completion_tokens) for u in totals] == [
            ("alice", True, 2, 11, 7), ("idle", False, 0, 0, 0)]
        assert [u.name for u in store.usage("idle")] == ["idle"]
        assert [(r.name, r.model, r.endpoint, r.requests, r.prompt_tokens, r.completion_tokens)
                for r in store.usage_detail()] == [("alice", "tiny", "/v1/chat/completions", 1, 10, 5),
                                                   ("alice", "tiny", "/v1/completions", 1, 1, 2)]
        assert store.usage_detail("idle") == []
        with pytest.raises(HeptaError, match="no key named 'carol'"):
            store.usage("carol")
        with pytest.raises(HeptaError, match="no key named 'carol'"):
            store.usage_detail("carol")


def test_missing_file_is_refused_unless_creating(tmp_path):
    with pytest.raises(HeptaError, match="no key file at .*hepta keys add"):
        KeyStore(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()


@pytest.mark.parametrize("content", [b"", b"not a database at all\n" * 10])
def test_non_key_files_are_refused_and_left_alone(tmp_path, content):
    path = tmp_path / "keys.db"
    path.write_bytes(content)
    with pytest.raises(HeptaError, match="hepta key file"):
        KeyStore(path)
    assert path.read_bytes() == content


def test_another_programs_sqlite_file_is_refused_even_when_creating(tmp_path):
    path = tmp_path / "posts.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE posts (id TEXT)")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(HeptaError, match="SQLite file of something else"):
        KeyStore(path, create=True)
    assert path.read_bytes() == before


def test_folder_is_refused(tmp_path):
    with pytest.raises(HeptaError, match="is a folder"):
        KeyStore(tmp_path, create=True)


def test_key_modules_import_no_torch():
    import subprocess
    import sys

    code = ("import sys, hepta.serve.keys, hepta.serve.ratelimit, hepta.serve.keys_cli; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
