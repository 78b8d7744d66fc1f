"""The chat endpoint's failure modes, against a fake OpenAI-compatible server in the test:
unreachable URLs fail fast and by name, replies that are not valid JSON (or fail
validation) are retried and then reported and never reach a scenario, and the key stays
out of every message."""

from __future__ import annotations

import json
import socket
import threading
import time
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agents.hems.agent import LLMInterpreter, run_dialogue
from agents.hems.llm import ChatClient, Endpoint, LLMError
from agents.hems.schema import SPEC


class FakeServer:
    """Serves /v1/models and /v1/chat/completions; the chat replies are `replies` in turn
    (the last one repeats). Records each request's headers and body."""

    def __init__(self, replies: list[str]) -> None:
        self.replies, self.requests = replies, []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send({"object": "list", "data": [{"id": "fake", "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                k = min(len(fake.requests) - 1, len(fake.replies) - 1)
                self._send({"id": "x", "object": "chat.completion", "created": 0,
                            "model": "fake", "choices": [{
                                "index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant",
                                            "content": fake.replies[k]}}]})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    servers: list[FakeServer] = []

    def start(replies: list[str]) -> FakeServer:
        servers.append(FakeServer(replies))
        return servers[-1]
    yield start
    for server in servers:
        server.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_endpoint_fails_fast_naming_the_url() -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"
    start = time.perf_counter()
    with pytest.raises(LLMError, match=f"{url} is unreachable"):
        ChatClient(Endpoint(url=url)).check()
    assert time.perf_counter() - start < 5


def test_silent_endpoint_times_out_naming_the_url() -> None:
    # a socket that accepts connections (the kernel's backlog) but never answers
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        start = time.perf_counter()
        with pytest.raises(LLMError, match=url):
            ChatClient(Endpoint(url=url, connect_timeout_s=1)).check()
        assert time.perf_counter() - start < 6


def test_invalid_json_is_retried_then_reported(fake) -> None:
    server = fake(["sure! the value is 4", '{"value": 4', "```json oops"])
    client = ChatClient(Endpoint(url=server.url))
    reading = LLMInterpreter(client, react=False, few_shot=True, reply_retries=2).interpret(
        SPEC["pv_kwp"], SPEC["pv_kwp"].question, "4 kWp")
    assert reading.status == "bad_reply" and reading.value is None
    assert "not valid JSON" in reading.detail
    assert len(server.requests) == 3  # the first try and two retries
    retry = server.requests[1][1]["messages"]
    assert retry[-1]["role"] == "user" and "not valid JSON" in retry[-1]["content"]
    # the JSON schema went along, so a constraining server cannot send this at all
    assert server.requests[0][1]["response_format"]["type"] == "json_schema"


def test_reply_of_the_wrong_shape_or_range_never_reaches_the_scenario(fake, tmp_path,
                                                                     monkeypatch) -> None:
    from cosim.cli import main
    from cosim.config import parse_config

    # every reply is valid JSON; the size is out of range, or the shape is wrong
    server = fake(['{"value": 9999}', '{"answer": 3}', '{"value": 9999}'])
    monkeypatch.setattr("builtins.input", lambda prompt: "we have a big one")
    monkeypatch.setenv("COSIM_LLM_API_KEY", "sk-test-SECRET-123")
    out = tmp_path / "home.toml"
    code = main(["hems", "interview", "--endpoint", server.url, "--react", "off",
                 "--max-retries", "1", "--out", str(out)])
    assert code == 0
    text = out.read_text()
    assert "9999" not in text
    raw = tomllib.loads(text)
    home = raw["households"]["homes"][0]
    assert home["pv_kwp"] == 0.0 and home["generator_kw"] == 0.0
    assert "pv_kwp" in text.split("[[households.homes]]")[0]  # listed as unknown
    raw["households"]["count"] = 1
    raw["profiles"] = {"dataset": "data"}
    parse_config(raw, tmp_path / "s.toml")
    # the key went to the server, and nowhere else
    assert server.requests[0][0]["authorization"] == "Bearer sk-test-SECRET-123"
    assert "SECRET" not in text and "SECRET" not in out.with_suffix(".json").read_text()


def test_react_agent_uses_the_validator_and_sees_its_errors(fake) -> None:
    server = fake([
        json.dumps({"thought": "a time", "action": "clock_hour", "input": "sometime"}),
        json.dumps({"thought": "try the figure", "action": "clock_hour", "input": "7:30 pm"}),
    ])
    reading = LLMInterpreter(ChatClient(Endpoint(url=server.url)), react=True).interpret(
        SPEC["ev_arrival_h"], SPEC["ev_arrival_h"].question, "oh, 7:30 pm or so")
    assert reading.status == "ok" and reading.value == 19.5
    second = server.requests[1][1]["messages"]
    assert second[-1]["content"].startswith("Observation: error: no time of day")
    assert [step.get("tool") for step in reading.trace if "tool" in step] == ["clock_hour"] * 2


def test_dialogue_records_unknowns_after_bad_replies(fake) -> None:
    server = fake(["not json"])
    interpreter = LLMInterpreter(ChatClient(Endpoint(url=server.url)), react=True,
                                 reply_retries=1)
    outcome = run_dialogue(interpreter, lambda spec, q, attempt: "4 kWp", max_retries=1)
    gates = ["pv_kwp", "battery_kwh", "ev_kwh", "heat_pump_kw", "flexible_share",
             "generator_kw"]
    assert outcome.unknown == gates and outcome.values == {}
    assert {t.status for t in outcome.turns} == {"bad_reply"}
    assert len(server.requests) == len(gates) * 2 * 2  # 2 askings x (1 + 1 reply retry)


def test_key_is_kept_out_of_reprs_and_errors(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("COSIM_LLM_API_KEY", "sk-test-SECRET-456")
    url = f"http://127.0.0.1:{_free_port()}/v1"
    endpoint = Endpoint.resolve(url)
    assert endpoint.api_key is not None
    assert "SECRET" not in repr(endpoint) and "SECRET" not in str(endpoint.model_dump())
    with pytest.raises(LLMError) as exc:
        ChatClient(endpoint).check()
    assert "SECRET" not in str(exc.value)
    config = tmp_path / "llm.toml"
    config.write_text('[llm]\nurl = "http://example.invalid/v1"\nmodel = "m"\n'
                      'api_key_env = "MY_KEY"\n')
    monkeypatch.setenv("MY_KEY", "sk-other")
    resolved = Endpoint.resolve(config=config)
    assert resolved.model == "m" and resolved.api_key.get_secret_value() == "sk-other"


def test_command_line_errors_exit_2(capsys) -> None:
    from cosim.cli import main

    url = f"http://127.0.0.1:{_free_port()}/v1"
    start = time.perf_counter()
    assert main(["hems", "evaluate", "--endpoint", url, "--personas", "1", "--seeds", "1",
                 "--no-progress"]) == 2
    assert url in capsys.readouterr().err and time.perf_counter() - start < 10
    with pytest.raises(SystemExit) as exc:
        main(["hems", "evaluate", "--personas", "0"])
    assert exc.value.code == 2
    assert "out of range" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["hems", "evaluate", "--local", "--endpoint", url])
    assert exc.value.code == 2
    assert main(["hems", "evaluate", "--endpoint", url, "--conditions", "magic"]) == 2
    assert "unknown magic" in capsys.readouterr().err
