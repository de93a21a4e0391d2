"""The engine core in its own process: what clients see when it dies, and that it never outlives the server."""

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from conftest import client, metric, start_server
from helpers import never_end

from hepta.serve.runner import free_port, wait_healthy

NUM_STREAMS = 8


def engine_pid(server) -> int:
    return server.server.config.app.state.hepta.engine.pid


def test_a_killed_engine_ends_open_requests_with_errors_and_a_new_one_serves(model_dir, caplog):
    caplog.set_level(logging.INFO, logger="hepta")
    server = start_server(model_dir, engine=dict(max_num_seqs=NUM_STREAMS + 1))
    try:
        c = client(server, timeout=60)
        endless = never_end(model_dir)  # every request runs until the kill
        streaming = threading.Barrier(NUM_STREAMS + 1)
        outcomes: list = [None] * (NUM_STREAMS + 1)

        def stream(i):
            chunks = 0
            try:
                for chunk in c.completions.create(model="micro", prompt=f"def f{i}(x):", max_tokens=1900,
                                                  temperature=0, stream=True, logit_bias=endless):
                    chunks += 1
                    if chunks == 3:
                        streaming.wait(timeout=60)
                    if chunk.choices and chunk.choices[0].finish_reason:
                        outcomes[i] = ("finished", chunk.choices[0].finish_reason)
                outcomes[i] = outcomes[i] or ("ended without [DONE] or error", chunks)
            except openai.APIError as e:
                outcomes[i] = ("error", type(e).__name__, e.message, chunks)

        def whole():
            try:
                outcomes[NUM_STREAMS] = ("finished", c.completions.create(model="micro", prompt="x", max_tokens=1900,
                                                                          temperature=0, logit_bias=endless)
                                        .choices[0].finish_reason)
            except openai.APIStatusError as e:
                outcomes[NUM_STREAMS] = ("status", e.status_code, e.body)

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(NUM_STREAMS)]
        threads.append(threading.Thread(target=whole))
        for t in threads:
            t.start()
        streaming.wait(timeout=60)  # every stream has its first tokens
        assert metric(server, "hepta_kv_cache_usage_ratio") > 0
        old_pid = engine_pid(server)
        os.kill(old_pid, signal.SIGKILL)
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads), "a request hung after the engine died"

        for outcome in outcomes[:NUM_STREAMS]:
            # the stream's last event is an error in OpenAI's shape; the client raises it
            assert outcome[:2] == ("error", "APIError") and "engine process died" in outcome[2], outcome
            assert "SIGKILL" in outcome[2] and outcome[3] >= 3
        assert outcomes[NUM_STREAMS][:2] == ("status", 500), outcomes[NUM_STREAMS]
        assert set(outcomes[NUM_STREAMS][2]) == {"message", "type", "param", "code"}
        # the dead engine's last values are not reported (nor are they the new engine's, idle from its start)
        assert metric(server, "hepta_kv_cache_usage_ratio") == 0
        assert metric(server, "hepta_requests_running") == 0

        health = httpx.get(f"{server.url}/health")
        if health.status_code == 503:  # the new engine may already be up on a fast machine
            assert health.json()["status"] == "restarting" and "SIGKILL" in health.json()["error"]
            error = httpx.post(f"{server.url}/v1/completions", json={"model": "micro", "prompt": "x", "max_tokens": 2})
            assert error.status_code == 503 and error.json()["error"]["code"] == "engine_restarting"
        started = time.monotonic()
        server.wait_ready(timeout=60)
        assert time.monotonic() - started < 60
        assert engine_pid(server) != old_pid
        answer = c.completions.create(model="micro", prompt="x", max_tokens=3, logit_bias=never_end(model_dir))
        assert answer.usage.completion_tokens == 3
        assert c.embeddings.create(model="micro", input="x").data[0].embedding
        logged = [r.getMessage() for r in caplog.records]
        assert any("engine process died (killed by SIGKILL)" in m and "starting a new engine" in m for m in logged)
    finally:
        server.stop()


def test_a_restart_that_fails_is_retried_and_reported_until_a_new_engine_serves(model_dir, tmp_path):
    folder = tmp_path / "micro"
    shutil.copytree(model_dir, folder)
    server = start_server(folder)
    try:
        weights = folder / "model.safetensors"
        weights.rename(tmp_path / "weights")  # every new engine fails to load until it is back
        os.kill(engine_pid(server), signal.SIGKILL)
        deadline = time.monotonic() + 60
        while (health := httpx.get(f"{server.url}/health").json()).get("attempt", 0) < 2:
            assert health["status"] in ("ok", "restarting") and time.monotonic() < deadline, health
            time.sleep(0.05)
        assert health["status"] == "restarting" and "SIGKILL" in health["error"], health
        assert "model.safetensors" in health["last_error"], health
        error = httpx.post(f"{server.url}/v1/completions", json={"model": "micro", "prompt": "x", "max_tokens": 2})
        assert error.status_code == 503 and error.json()["error"]["code"] == "engine_restarting"
        assert f"attempt {health['attempt']}" in error.json()["error"]["message"]
        (tmp_path / "weights").rename(weights)
        server.wait_ready(timeout=60)  # the next attempt waits 2 s (4 s should it have begun before the rename)
        assert httpx.get(f"{server.url}/health").json() == {"status": "ok", "model": "micro"}
        answer = client(server).completions.create(model="micro", prompt="x", max_tokens=3,
                                                   logit_bias=never_end(model_dir))
        assert answer.usage.completion_tokens == 3
    finally:
        server.stop()


def descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_hepta_serve_leaves_no_engine_process_behind(model_dir, stop_signal):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "hepta", "serve", "--model", str(model_dir), "--port", str(port),
                                "--name", "micro"], stderr=subprocess.PIPE, text=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", timeout=120, process=process)
        children = descendants(process.pid)
        engines = [pid for pid in children if "hepta.infer.core" in Path(f"/proc/{pid}/cmdline").read_text()
                   or "multiprocessing.spawn" in Path(f"/proc/{pid}/cmdline").read_text()]
        assert engines, f"no engine process among the server's children {children}"
        process.send_signal(stop_signal)
        _, stderr = process.communicate(timeout=60)
        if stop_signal != signal.SIGKILL:
            assert process.returncode in (0, -stop_signal, 128 + stop_signal), process.returncode
            assert "Traceback" not in stderr, stderr
        deadline = time.monotonic() + 30  # after a SIGKILL the engine notices its closed pipe and exits itself
        while any(alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(pid) for pid in children), f"left behind after {stop_signal.name}: {children}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_sigterm_to_the_whole_process_group_stops_the_server_in_order(model_dir):
    """systemd's stop and `kill -TERM -PGID` reach the engine too: it waits for the server to stop it."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "hepta", "serve", "--model", str(model_dir), "--port", str(port),
                                "--name", "micro"], stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", timeout=120, process=process)
        children = descendants(process.pid)
        assert children
        os.killpg(process.pid, signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode in (0, -signal.SIGTERM, 128 + signal.SIGTERM), (process.returncode, stderr)
        assert "died" not in stderr and "starting a new engine" not in stderr and "Traceback" not in stderr, stderr
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(pid) for pid in children), f"left behind: {children}"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
