"""Running the API under uvicorn: in the foreground (`hepta serve`) or on a background thread
(the demo, tests and benchmarks start a real server on 127.0.0.1 and a free port)."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from hepta.errors import HeptaError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _config(app: FastAPI, host: str, port: int, log_level: str) -> uvicorn.Config:
    # hepta logs one line per request itself (with the duration), so uvicorn's access log is off
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on",
                          timeout_graceful_shutdown=5)


def serve_forever(app: FastAPI, host: str, port: int, log_level: str = "info") -> None:
    server = uvicorn.Server(_config(app, host, port, log_level))
    server.run()
    if not server.started:
        raise HeptaError(f"could not listen on {host}:{port} (is the port in use?); choose another --port")


def wait_healthy(url: str, timeout: float = 120, process=None) -> None:
    """Blocks until `url`/health answers 200 (the model is loaded); `process` is the server's, if it runs apart."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            response = httpx.get(f"{url}/health", timeout=5)
            if response.status_code == 200:
                return
            if response.json().get("status") == "failed":
                raise HeptaError(f"the model failed to load: {response.json().get('error')}")
        except httpx.TransportError:
            pass  # not listening yet
        if process is not None and process.poll() is not None:
            raise HeptaError(f"the server process exited with status {process.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise HeptaError(f"the model at {url} was not ready after {timeout:.0f} s")
        time.sleep(0.05)


class BackgroundServer:
    """`with BackgroundServer(app) as server:` serves `app` at `server.url` until the block ends."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int | None = None, log_level: str = "warning"):
        self.host, self.port = host, port or free_port(host)
        self.server = uvicorn.Server(_config(app, self.host, self.port, log_level))
        self.thread = threading.Thread(target=self.server.run, name="hepta-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise HeptaError(f"the API server did not start on {self.url}")
            time.sleep(0.01)
        return self

    def wait_ready(self, timeout: float = 120) -> None:
        """Blocks until /health says the model is loaded."""
        wait_healthy(self.url, timeout)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
