"""`hepta keys` as a user meets it: the key printed once, tables and JSON, one-line errors."""

import json
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from hepta.cli import main
from hepta.serve.keys import KeyStore
from helpers import run_cli


def hepta_keys(capsys, *args):
    code = main(["keys", *args])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err, *words):
    lines = [line for line in err.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_add_prints_the_key_once_and_list_never_shows_it(tmp_path, capsys):
    f = str(tmp_path / "keys.db")
    code, out, err = hepta_keys(capsys, "add", "alice", "--file", f, "--rpm", "60", "--tpm", "40000")
    assert code == 0
    raw = out.strip()
    assert out == raw + "\n" and raw.startswith("hk-")  # stdout is the key alone, for KEY=$(hepta keys add ...)
    assert "will not be shown again" in err and "60 requests/min" in err and "40000 tokens/min" in err
    with KeyStore(f) as store:
        record = store.authenticate(raw)
        assert (record.name, record.rpm, record.tpm) == ("alice", 60, 40000)
        store.record_usage(record.id, "tiny", 12, 30, "/v1/chat/completions")

    code, out, err = hepta_keys(capsys, "list", "--file", f)
    assert code == 0 and raw not in out and raw[3:] not in out
    header, row = out.splitlines()
    assert header.split() == ["NAME", "KEY", "CREATED", "RPM", "TPM", "REQUESTS", "TOKENS", "STATUS"]
    assert row.split()[0:2] == ["alice", raw[:11] + "..."] and row.split()[-5:] == ["60", "40000", "1", "42", "active"]

    code, out, _ = hepta_keys(capsys, "list", "--file", f, "--json")
    listed = json.loads(out)
    assert raw not in out
    assert listed == [{"name": "alice", "key": raw[:11] + "...", "created": listed[0]["created"], "revoked": False,
                       "rpm": 60, "tpm": 40000, "requests": 1, "prompt_tokens": 12, "completion_tokens": 30}]


def test_usage_revoke_and_limits(tmp_path, capsys):
    f = str(tmp_path / "keys.db")
    hepta_keys(capsys, "add", "alice", "--file", f)
    hepta_keys(capsys, "add", "bob", "--file", f, "--rpm", "5")
    with KeyStore(f) as store:
        for name, p, c in (("alice", 10, 20), ("alice", 1, 2), ("bob", 5, 0)):
            store.record_usage(store.get(name).id, "tiny", p, c, "/v1/completions")
        shown = {name: store.get(name).display for name in ("alice", "bob")}

    code, out, _ = hepta_keys(capsys, "usage", "--file", f, "--json")
    assert code == 0
    assert [(u["name"], u["requests"], u["prompt_tokens"], u["completion_tokens"], u["total_tokens"])
            for u in json.loads(out)] == [("alice", 2, 11, 22, 33), ("bob", 1, 5, 0, 5)]
    code, out, _ = hepta_keys(capsys, "usage", "bob", "--file", f)
    assert code == 0 and out.splitlines()[1].split()[2:] == ["1", "5", "0", "5"] and "alice" not in out

    code, out, _ = hepta_keys(capsys, "usage", "--file", f, "--detail", "--json")
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert code == 0 and json.loads(out) == [
        {"name": "alice", "key": shown["alice"], "day": today, "model": "tiny",
         "endpoint": "/v1/completions", "requests": 2, "prompt_tokens": 11, "completion_tokens": 22},
        {"name": "bob", "key": shown["bob"], "day": today, "model": "tiny",
         "endpoint": "/v1/completions", "requests": 1, "prompt_tokens": 5, "completion_tokens": 0}]
    code, out, _ = hepta_keys(capsys, "usage", "alice", "--file", f, "--detail")
    assert out.splitlines()[1].split() == [today, "alice", "tiny", "/v1/completions", "2", "11", "22"]

    code, out, _ = hepta_keys(capsys, "limits", "bob", "--file", f, "--tpm", "1000")
    assert code == 0 and "5 requests/min, 1000 tokens/min" in out
    code, out, _ = hepta_keys(capsys, "limits", "bob", "--file", f, "--rpm", "0")
    assert code == 0 and "unlimited requests/min, 1000 tokens/min" in out

    code, out, _ = hepta_keys(capsys, "revoke", "bob", "--file", f)
    assert code == 0 and "revoked key 'bob'" in out
    _, out, _ = hepta_keys(capsys, "list", "--file", f)
    assert out.splitlines()[2].split()[-1] == "revoked"
    _, out, _ = hepta_keys(capsys, "usage", "--file", f)
    assert "bob (revoked)" in out  # the history of a revoked key stays


def test_duplicate_name_is_one_error_and_the_first_key_still_works(tmp_path, capsys):
    f = str(tmp_path / "keys.db")
    _, out, _ = hepta_keys(capsys, "add", "alice", "--file", f)
    raw = out.strip()
    code, out, err = hepta_keys(capsys, "add", "alice", "--file", f, "--rpm", "1")
    assert code == 1 and out == ""
    one_error_line(err, "a key named 'alice' already exists")
    with KeyStore(f) as store:
        assert store.authenticate(raw).rpm is None and len(store.list()) == 1


@pytest.mark.parametrize("args, words", [
    (["revoke", "carol"], ["no active key named 'carol'"]),
    (["limits", "carol", "--rpm", "3"], ["no active key named 'carol'"]),
    (["usage", "carol"], ["no key named 'carol'"]),
    (["add", "bad name"], ["'bad name' is not allowed"]),
    (["add", "dave", "--rpm", "-3"], ["--rpm must be a positive whole number, or 0 for no limit (got -3)"]),
    (["limits", "alice", "--tpm", "-1"], ["--tpm must be a positive whole number"]),
    (["defaults", "--rpm", "-1"], ["--rpm must be a positive whole number"]),
])
def test_bad_requests_on_a_good_file(tmp_path, capsys, args, words):
    f = str(tmp_path / "keys.db")
    hepta_keys(capsys, "add", "alice", "--file", f)
    code, out, err = hepta_keys(capsys, *args, "--file", f)
    assert code == 1
    one_error_line(err, *words)


def test_bad_files(tmp_path, capsys):
    missing = tmp_path / "missing.db"
    code, _, err = hepta_keys(capsys, "list", "--file", str(missing))
    assert code == 1 and not missing.exists()
    one_error_line(err, "no key file at", "hepta keys add")

    text = tmp_path / "notes.db"
    text.write_text("just some notes\n" * 100)
    for action in (["list"], ["add", "alice"], ["usage"], ["revoke", "alice"]):
        code, _, err = hepta_keys(capsys, *action, "--file", str(text))
        assert code == 1
        one_error_line(err, "is not a readable hepta key file")
    assert text.read_text() == "just some notes\n" * 100

    other = tmp_path / "posts.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE posts (id TEXT)")
    db.commit()
    db.close()
    code, _, err = hepta_keys(capsys, "add", "alice", "--file", str(other))
    assert code == 1
    one_error_line(err, "SQLite file of something else")


def test_defaults_apply_to_new_keys_only(tmp_path, capsys):
    f = str(tmp_path / "keys.db")
    hepta_keys(capsys, "add", "early", "--file", f)
    code, out, _ = hepta_keys(capsys, "defaults", "--file", f)
    assert code == 0 and "new keys get unlimited requests/min, unlimited tokens/min" in out
    code, out, _ = hepta_keys(capsys, "defaults", "--file", f, "--rpm", "30", "--tpm", "20000")
    assert code == 0 and "new keys get 30 requests/min, 20000 tokens/min" in out
    _, _, err = hepta_keys(capsys, "add", "late", "--file", f)
    assert "30 requests/min, 20000 tokens/min" in err
    _, _, err = hepta_keys(capsys, "add", "free", "--file", f, "--rpm", "0", "--tpm", "500")
    assert "unlimited requests/min, 500 tokens/min" in err
    with KeyStore(f) as store:
        assert {k.name: (k.rpm, k.tpm) for k in store.list()} == {
            "early": (None, None), "late": (30, 20000), "free": (None, 500)}


def test_default_file_is_in_the_current_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = hepta_keys(capsys, "add", "alice")
    assert code == 0 and (tmp_path / "hepta-keys.db").is_file()
    with KeyStore(tmp_path / "hepta-keys.db") as store:
        assert store.authenticate(out.strip()).name == "alice"


def test_empty_list_says_how_to_add(tmp_path, capsys):
    f = str(tmp_path / "keys.db")
    hepta_keys(capsys, "add", "alice", "--file", f)
    hepta_keys(capsys, "revoke", "alice", "--file", f)
    with KeyStore(f) as store:
        assert [k.revoked for k in store.list()] == [True]
    KeyStore(tmp_path / "fresh.db", create=True).close()
    code, out, _ = hepta_keys(capsys, "list", "--file", str(tmp_path / "fresh.db"))
    assert code == 0 and "no keys in" in out and "hepta keys add NAME" in out


def test_end_to_end_in_a_subprocess(tmp_path):
    f = str(tmp_path / "keys.db")
    added = run_cli("keys", "add", "app", "--file", f, "--tpm", "1000", timeout=60)
    assert added.returncode == 0, added.stderr
    raw = added.stdout.strip()
    assert raw.startswith("hk-") and "will not be shown again" in added.stderr
    listed = run_cli("keys", "list", "--file", f, "--json", timeout=60)
    assert listed.returncode == 0 and raw not in listed.stdout
    assert [(k["name"], k["rpm"], k["tpm"]) for k in json.loads(listed.stdout)] == [("app", None, 1000)]
    again = run_cli("keys", "add", "app", "--file", f, timeout=60)
    assert again.returncode == 1 and again.stdout == ""
    one_error_line(again.stderr, "a key named 'app' already exists")
    with KeyStore(f) as store:
        assert store.authenticate(raw).name == "app"


def test_keys_command_loads_no_torch(tmp_path):
    code = (f"import sys; from hepta.cli import main; rc = main(['keys', 'list', '--file', {str(tmp_path / 'k.db')!r}]); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "no key file at" in proc.stderr, proc.stderr  # ran the command, no torch
