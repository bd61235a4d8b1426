"""The `openai-api:` writer against a real HTTP server started here.

llama-cpp-python has no wheel on this project's package index (only a source tarball that compiles
llama.cpp), so the server is the project's own stand-in: the standard library's `http.server`
speaking `POST /v1/chat/completions` and answering from a real tiny transformers model.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pixsearch.answering import DEFAULT_TEMPLATE, AnsweringOptions, write_answer
from pixsearch.models import registry
from pixsearch.models.roles import Role
from pixsearch.models.writer import CausalLmWriter
from pixsearch.models.writer_http import OpenAiWriter, WriterUnavailableError
from pixsearch.train.writer_lm import save_tiny_lm

WORDS = DEFAULT_TEMPLATE.split() + "a red blue circle square what colour".split()


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, model: CausalLmWriter) -> None:
        super().__init__(("127.0.0.1", 0), ChatHandler)
        self.model = model
        self.requests: list[tuple[dict[str, Any], str | None]] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class ChatHandler(BaseHTTPRequestHandler):
    server: ChatServer

    def do_POST(self) -> None:  # noqa: N802 - the http.server name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((body, self.headers.get("Authorization")))
        if self.path == "/broken/v1/chat/completions":
            return self._send(500, b'{"error": "model not loaded"}')
        if self.path == "/garbage/v1/chat/completions":
            return self._send(200, b"<html>not json</html>")
        if self.path != "/v1/chat/completions":
            return self._send(404, b'{"error": "not found"}')
        text = self.server.model.write(body["messages"][-1]["content"], max_new_tokens=body["max_tokens"])
        reply = {
            "object": "chat.completion",
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}],
        }
        self._send(200, json.dumps(reply).encode())

    def _send(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> CausalLmWriter:
    model = registry.create(f"llm:{save_tiny_lm(tmp_path_factory.mktemp('served-lm'), WORDS)}", Role.WRITER)
    model.load()
    return model


@pytest.fixture(scope="module")
def server(tiny_model: CausalLmWriter) -> Iterator[ChatServer]:
    server = ChatServer(tiny_model)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_served_model_writes_the_answer(
    server: ChatServer, tiny_model: CausalLmWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIXSEARCH_LLM_API_KEY", "sk-test-key")
    writer = registry.create(f"openai-api:{server.base}#tiny-lm", Role.WRITER)
    writer.load()
    options = AnsweringOptions(max_new_tokens=5)
    result = write_answer("a red circle", "what colour?", [("red", 0.8), ("blue", 0.1)], writer, options)
    body, auth = server.requests[-1]
    assert body["model"] == "tiny-lm" and body["max_tokens"] == 5 and body["temperature"] == 0
    assert body["messages"] == [{"role": "user", "content": result.prompt}]
    assert auth == "Bearer sk-test-key"
    direct = tiny_model.write(result.prompt, max_new_tokens=5)
    assert result.answer == (direct.splitlines()[0].strip() if direct.strip() else "red")
    assert result.candidates == [("red", 0.8), ("blue", 0.1)]


def test_no_key_sends_no_authorization(server: ChatServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIXSEARCH_LLM_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    registry.create(f"openai-api:{server.base}/", Role.WRITER).write("what colour", max_new_tokens=1)
    body, auth = server.requests[-1]
    assert auth is None and body["model"] == "default"


def test_server_errors_are_named(server: ChatServer) -> None:
    host = server.base.removesuffix("/v1")
    with pytest.raises(WriterUnavailableError, match="answered HTTP 500: .*model not loaded"):
        registry.create(f"openai-api:{host}/broken/v1", Role.WRITER).write("q")
    with pytest.raises(WriterUnavailableError, match="not an OpenAI chat response"):
        registry.create(f"openai-api:{host}/garbage/v1", Role.WRITER).write("q")


def test_a_refused_connection_is_named() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago, and has nobody listening now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    writer = registry.create(f"openai-api:http://127.0.0.1:{port}/v1", Role.WRITER)
    with pytest.raises(WriterUnavailableError, match=f"127.0.0.1:{port}/v1/chat/completions is not reachable"):
        writer.write("q", timeout_s=5)


def test_a_silent_server_times_out() -> None:
    with socket.socket() as listener:  # accepts connections (the kernel's backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        writer = registry.create(f"openai-api:http://127.0.0.1:{port}/v1", Role.WRITER)
        with pytest.raises(WriterUnavailableError, match="did not answer within 0.3 s"):
            writer.write("q", timeout_s=0.3)


def test_bad_urls_are_refused() -> None:
    from pixsearch.errors import ConfigError

    with pytest.raises(ConfigError, match="not an http"):
        registry.create("openai-api:localhost-8080", Role.WRITER)
    assert isinstance(registry.create("openai-api:https://llm.example/v1#m", Role.WRITER), OpenAiWriter)
