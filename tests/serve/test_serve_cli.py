"""`hepta serve` as users start it: a real process, a real port, one log line per request."""

import subprocess
import sys

import openai
from helpers import never_end, run_cli

from hepta.serve.runner import free_port, wait_healthy


def test_hepta_serve_answers_the_openai_client_and_logs_each_request(model_dir):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "hepta", "serve", "--model", str(model_dir), "--port", str(port),
                                "--name", "micro"], stderr=subprocess.PIPE, text=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", timeout=120, process=process)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        answer = client.chat.completions.create(model="micro", messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=4, logit_bias=never_end(model_dir))
        assert answer.usage.completion_tokens == 4
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert "open, no API keys: reachable from this machine only" in stderr
    request_lines = [line for line in stderr.splitlines() if '"POST /v1/chat/completions" 200' in line]
    assert len(request_lines) == 1 and "ms" in request_lines[0]
    assert "Traceback" not in stderr


def test_hepta_serve_refuses_bad_setups_in_one_line(model_dir, tmp_path):
    cases = [
        (["--model", str(tmp_path / "missing")], "not a model folder"),
        (["--model", str(model_dir), "--host", "0.0.0.0"], "without keys"),
        (["--model", str(model_dir), "--api-keys", str(tmp_path / "keys.db")], "hepta keys add"),
        (["--model", str(model_dir), "--live-db", str(tmp_path / "posts.db")], "hepta live ingest"),
    ]
    for args, phrase in cases:
        result = run_cli("serve", *args, timeout=60)
        assert result.returncode == 1 and phrase in result.stderr, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
