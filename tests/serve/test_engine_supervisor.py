"""EngineSupervisor's choices with engines it cannot tell from real ones: which engine is live, when to retry."""

import threading
import time

import pytest
from fastapi.testclient import TestClient

from hepta.serve import engine_supervisor
from hepta.serve.app import ServeConfig, create_app
from hepta.serve.engine_supervisor import EngineSupervisor, retry_wait
from hepta.serve.state import ServerState


class FakeEngine:
    """What the supervisor and the gates read of an EngineClient."""

    pid, num_slots, max_len, kv_usage, num_requests_running, num_waiting = None, 1, 8, 0.5, 1, 0

    def __init__(self, dead: str | None = None):
        self.dead = dead
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True


def supervisor_opening(opens) -> EngineSupervisor:
    """A supervisor whose engine starts are the calls in `opens`, in turn (each returns an engine or raises)."""
    state = ServerState(model_name="micro", tokenizer=object())
    supervisor = EngineSupervisor(state, ServeConfig(model="unused"), None, loop=None)
    calls = iter(opens)
    supervisor._open_engine = lambda: next(calls)()
    return supervisor


def wait_for(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setattr(engine_supervisor, "FIRST_RETRY_S", 0.05)


def test_retry_waits_double_from_the_first_failure_up_to_their_cap():
    assert [retry_wait(n) for n in range(8)] == [0, 1, 2, 4, 8, 16, 30, 30]


def test_an_engine_that_died_before_it_was_installed_is_not_installed_and_a_new_one_is_started(fast_retries):
    supervisor = None
    stillborn, live = FakeEngine(), FakeEngine()

    def dies_while_loading():
        stillborn.dead = "the engine process died (killed by SIGKILL)"
        supervisor._died(stillborn, stillborn.dead)  # its death is seen before the install: not the live engine
        return stillborn

    supervisor = supervisor_opening([dies_while_loading, lambda: live])
    supervisor.start()
    wait_for(lambda: supervisor.state.engine is not None)
    assert supervisor.state.engine is live
    assert (supervisor.state.restarting, supervisor.state.restart_attempt, supervisor.state.restart_error) == \
        (None, 0, None)


def test_the_death_of_an_engine_that_is_not_the_live_one_leaves_the_live_one_serving():
    live, other = FakeEngine(), FakeEngine()
    supervisor = supervisor_opening([lambda: live])
    supervisor.start()
    wait_for(lambda: supervisor.state.engine is not None)
    supervisor._died(other, "the engine process died (exit status 1)")
    assert supervisor.state.engine is live and supervisor.state.restarting is None


def test_failed_restarts_are_retried_with_growing_waits_reported_and_cleared_once_one_serves(fast_retries):
    attempts: list[float] = []
    first, last = FakeEngine(), FakeEngine()
    reported = []

    def fails():
        attempts.append(time.monotonic())
        state = supervisor.state
        reported.append((state.engine, state.restarting, state.restart_attempt, state.restart_error))
        raise RuntimeError(f"model.safetensors is missing ({len(attempts)})")

    def serves():
        attempts.append(time.monotonic())
        return last

    supervisor = supervisor_opening([lambda: first, fails, fails, fails, serves])
    supervisor.start()
    wait_for(lambda: supervisor.state.engine is first)
    first.dead = "the engine process died (killed by SIGKILL)"
    supervisor._died(first, first.dead)
    assert supervisor.state.metrics.kv_usage._value.get() == 0  # the dead engine's gauges are not read
    wait_for(lambda: supervisor.state.engine is last)
    assert reported == [(None, first.dead, 1, None),
                        (None, first.dead, 2, "model.safetensors is missing (1)"),
                        (None, first.dead, 3, "model.safetensors is missing (2)")]
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2, gaps
    state = supervisor.state
    assert (state.restarting, state.restart_attempt, state.restart_error, state.load_error) == (None, 0, None, None)


def test_an_engine_that_dies_soon_after_a_restart_is_restarted_after_a_wait(fast_retries):
    engines = [FakeEngine() for _ in range(3)]
    started: list[float] = []

    def opens(engine):
        def start():
            started.append(time.monotonic())
            return engine
        return start

    supervisor = supervisor_opening([opens(e) for e in engines])
    supervisor.start()
    for engine, successor in zip(engines, engines[1:]):
        wait_for(lambda: supervisor.state.engine is engine)
        engine.dead = "the engine process died (exit status 1)"
        supervisor._died(engine, engine.dead)
        wait_for(lambda: supervisor.state.engine is successor)
    # each died at once: the first restart waits the first retry's 0.05 s, the second twice that
    assert started[1] - started[0] >= 0.05 and started[2] - started[1] >= 0.1, started


def test_a_model_that_fails_its_first_load_is_reported_and_not_retried(fast_retries):
    calls = []

    def fails():
        calls.append(1)
        raise RuntimeError("config.json is missing")

    supervisor = supervisor_opening([fails, fails])
    supervisor.start()
    wait_for(lambda: supervisor.state.load_error is not None)
    time.sleep(0.3)
    assert calls == [1] and supervisor.state.load_error == "config.json is missing"
    assert supervisor.state.restarting is None


def test_stopping_ends_a_restart_waiting_out_its_backoff():
    supervisor = supervisor_opening([lambda: FakeEngine()])
    supervisor._failures = 5  # a 16 s wait
    thread = threading.Thread(target=supervisor._run, args=("the engine process died (exit status 1)",))
    thread.start()
    supervisor.stop()
    thread.join(timeout=2)
    assert not thread.is_alive() and supervisor.state.engine is None


def test_health_and_requests_say_restarting_while_the_live_engine_is_dead(model_dir):
    app = create_app(ServeConfig(model=str(model_dir), model_name="micro"))  # no lifespan: no engine is started
    state = app.state.hepta
    state.engine = FakeEngine(dead="the engine process died (killed by SIGKILL)")
    http = TestClient(app)
    health = http.get("/health")
    assert health.status_code == 503
    assert health.json() == {"status": "restarting", "error": "the engine process died (killed by SIGKILL)",
                             "attempt": 0, "last_error": None}
    answer = http.post("/v1/completions", json={"model": "micro", "prompt": "x", "max_tokens": 2})
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "engine_restarting"
    assert "killed by SIGKILL" in answer.json()["error"]["message"]

    state.engine, state.restarting, state.restart_attempt = None, "the engine process died (killed by SIGKILL)", 3
    state.restart_error = "model.safetensors is missing"
    health = http.get("/health").json()
    assert (health["status"], health["attempt"], health["last_error"]) == ("restarting", 3,
                                                                            "model.safetensors is missing")
    message = http.post("/v1/completions", json={"model": "micro", "prompt": "x"}).json()["error"]["message"]
    assert "attempt 3" in message and "attempt 2 failed: model.safetensors is missing" in message, message
