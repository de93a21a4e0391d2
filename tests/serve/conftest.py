"""A real model folder, a real uvicorn server on 127.0.0.1 and the real `openai` client."""

from __future__ import annotations

import pytest

import hepta
from hepta.tokenizer import Tokenizer

SERVE_SHAPE = {"vocab_size": 512, "dim": 64, "num_layers": 2, "attention.num_heads": 2, "attention.num_kv_heads": 1,
               "attention.head_dim": 32, "moe.num_experts": 4, "moe.expert_hidden_dim": 32, "max_seq_len": 2048}


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, corpus):
    """A model folder as `hepta train` writes it: random weights, a tokenizer trained on real text."""
    folder = tmp_path_factory.mktemp("served") / "micro"
    tokenizer = Tokenizer.train([f.read_text() for f in sorted(corpus.iterdir())], text_vocab_size=480)
    model = hepta.build_model(hepta.get_preset("tiny").with_changes(SERVE_SHAPE), seed=0)
    hepta.save_model(model, folder)
    tokenizer.save(folder)
    return folder


def start_server(model_dir, **config):
    from hepta.infer.engine import EngineConfig
    from hepta.serve.app import ServeConfig, create_app
    from hepta.serve.runner import BackgroundServer

    engine = EngineConfig(**config.pop("engine", {}))
    app = create_app(ServeConfig(model=str(model_dir), model_name="micro", engine=engine, **config))
    server = BackgroundServer(app).start()
    server.wait_ready()
    return server


def client(server, **kwargs):
    import openai

    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=kwargs.pop("api_key", "unused"), max_retries=0,
                         **kwargs)


def metric(server, name) -> float:
    """One sample of the server's Prometheus metrics."""
    import re

    import httpx

    text = httpx.get(f"{server.url}/metrics").text
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


@pytest.fixture(scope="module")
def server(model_dir):
    server = start_server(model_dir)
    yield server
    server.stop()


@pytest.fixture
def openai_client(server):
    return client(server)


@pytest.fixture(scope="session")
def live_db(tmp_path_factory):
    """A post store filled with the bundled sample stream, as `hepta live ingest` fills one."""
    from hepta.cli import main
    from hepta.live.synth import SAMPLE_STREAM

    db = tmp_path_factory.mktemp("live") / "posts.db"
    assert main(["live", "ingest", "--source", f"jsonl:{SAMPLE_STREAM}", "--db", str(db), "--quiet"]) == 0
    return db
