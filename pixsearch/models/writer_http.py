"""`openai-api:` a language model behind an OpenAI-compatible HTTP server (the `Writer` role).

Ollama, llama.cpp's `llama-server` and vLLM all serve `POST {base}/chat/completions`. The spec is
the base URL, with the model name after a `#`:

    openai-api:http://localhost:11434/v1#llama3.2:1b      (Ollama)
    openai-api:http://localhost:8080/v1                   (llama.cpp serves one model; no name needed)

The API key, if the server wants one, comes from PIXSEARCH_LLM_API_KEY (else OPENAI_API_KEY) and is
sent as a bearer token. Only the standard library is used, so no client package is needed.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from pixsearch.errors import ConfigError, ModelLoadError
from pixsearch.models.spec import ModelOptions, ModelSpec

log = logging.getLogger(__name__)

KEY_VARIABLES = ("PIXSEARCH_LLM_API_KEY", "OPENAI_API_KEY")
MAX_RESPONSE_BYTES = 1_000_000


class WriterUnavailableError(ModelLoadError):
    """The language model server refused, timed out, or answered with an error."""


class OpenAiWriter:
    """One chat message in, the first choice's text out."""

    def __init__(self, spec: ModelSpec, options: ModelOptions) -> None:
        self.spec = spec
        base, _, model = spec.source.partition("#")
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"model spec {spec}: {base!r} is not an http(s) URL (e.g. openai-api:http://host:8080/v1)"
            )
        self.url = base.rstrip("/") + "/chat/completions"
        self.model = model or "default"
        self.api_key = next((os.environ[name] for name in KEY_VARIABLES if os.environ.get(name)), None)

    def load(self) -> None:
        """Nothing to load: the server holds the weights (an unreachable server fails on the first `write`)."""

    def close(self) -> None:
        """Nothing to free."""

    def write(self, prompt: str, max_new_tokens: int = 32, timeout_s: float = 30.0) -> str:
        """Raises WriterUnavailableError naming the URL and what went wrong."""
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_new_tokens,
            "temperature": 0,
            "stream": False,
        }
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                payload = response.read(MAX_RESPONSE_BYTES)
        except urllib.error.HTTPError as error:
            detail = error.read(500).decode("utf-8", "replace").strip()
            raise WriterUnavailableError(
                f"language model at {self.url} answered HTTP {error.code}: {detail}"
            ) from error
        except TimeoutError as error:
            raise WriterUnavailableError(
                f"language model at {self.url} did not answer within {timeout_s:g} s"
            ) from error
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, TimeoutError):
                raise WriterUnavailableError(
                    f"language model at {self.url} did not answer within {timeout_s:g} s"
                ) from error
            raise WriterUnavailableError(f"language model at {self.url} is not reachable: {reason}") from error
        return _first_choice(payload, self.url)


def _first_choice(payload: bytes, url: str) -> str:
    try:
        data = json.loads(payload)
        message = data["choices"][0]
        text = message["message"]["content"] if "message" in message else message["text"]
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise WriterUnavailableError(
            f"language model at {url} sent no completion (not an OpenAI chat response): {payload[:200]!r}"
        ) from error
    return str(text or "").strip()
