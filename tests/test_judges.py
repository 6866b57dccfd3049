"""Judges against real components: a scripted HTTP server on 127.0.0.1 and a tiny random causal LM on disk."""

from __future__ import annotations

import asyncio
import json
import socket
import string
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf
from support import save_random_lm

from orderopt.rewards import (
    JudgeConfig,
    JudgeError,
    LocalModelJudge,
    OpenAIJudge,
    RubricJudge,
    distinctiveness,
    judged_scores,
    make_judge,
)

CONF = Path(__file__).resolve().parents[1] / "conf" / "judge"
RUBRIC_TEXT = "Reward vivid, specific, coherent writing that answers the prompt."


# ------------------------------------------------------------------------------------------------------------
# A real OpenAI-compatible server whose answers each test scripts.

Reply = tuple[int, bytes, float]  # status, body, seconds to wait before answering


def chat(content: str) -> Reply:
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
    return 200, json.dumps(body).encode(), 0.0


class ScriptedServer:
    """Answers request number n (from 0) with ``script(n, request_json, headers)``; records every request."""

    def __init__(self) -> None:
        self.script: Callable[[int, dict[str, Any], dict[str, str]], Reply] = lambda n, r, h: chat("Score: 8")
        self.requests: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with server._lock:
                    n = len(server.requests)
                    server.requests.append((self.path, body, headers))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    status, payload, delay = server.script(n, body, headers)
                    time.sleep(delay)
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up (timeout) and closed the connection
                    pass
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 64  # the default backlog of 5 drops concurrent connects (1 s SYN retry)

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    yield srv
    srv.close()


def judge_for(url: str, **kwargs: Any) -> OpenAIJudge:
    options: dict[str, Any] = {
        "base_url": url,
        "model": "judge-model",
        "timeout_s": 2.0,
        "max_retries": 3,
        "backoff_s": 0.001,
    }
    return OpenAIJudge(rubric_text=RUBRIC_TEXT, **{**options, **kwargs})


def completion_of(request: dict[str, Any]) -> str:
    return request["messages"][1]["content"].split("Completion:\n", 1)[1]


# ------------------------------------------------------------------------------------------------------------
# OpenAIJudge


def test_openai_judge_sends_rubric_prompt_and_reads_score(server: ScriptedServer) -> None:
    scores = judge_for(server.url).quality(["Write a haiku", "Name a colour"], ["rain on tin", "teal"])
    assert scores == [pytest.approx(0.8), pytest.approx(0.8)]
    path, body, _ = server.requests[0]
    assert path == "/v1/chat/completions"
    assert body["model"] == "judge-model" and body["temperature"] == 0
    system, user = body["messages"]
    assert system["role"] == "system" and RUBRIC_TEXT in system["content"] and "Score: N" in system["content"]
    assert user["role"] == "user"
    users = sorted(req["messages"][1]["content"] for _, req, _ in server.requests)
    assert users == [
        "Prompt:\nName a colour\n\nCompletion:\nteal",
        "Prompt:\nWrite a haiku\n\nCompletion:\nrain on tin",
    ]


ANSWERS = {
    "a": ("Score: 7", 0.7),
    "b": ("score: 7/10", 0.7),
    "c": ("7.5", 0.75),
    "d": ('{"score": 9}', 0.9),
    "e": ('```json\n{"reasoning": "fine", "score": "6"}\n```', 0.6),
    "f": ("The imagery is fresh but the ending is flat.\n**Score:** 4\nHope this helps!", 0.4),
    "g": ("I'd give it 3 out of 10.", 0.3),
    "h": ("Score: 10/10", 1.0),
    "i": ("Score: 0", 0.0),
}


def test_openai_judge_parses_varied_answers(server: ScriptedServer) -> None:
    server.script = lambda n, req, h: chat(ANSWERS[completion_of(req)][0])
    scores = judge_for(server.url, max_retries=0).quality(["p"] * len(ANSWERS), list(ANSWERS))
    assert scores == [pytest.approx(expected) for _, expected in ANSWERS.values()]


@pytest.mark.parametrize("answer", ["Score: 11", "Score: -1", "great story", "3 or 4", ""])
def test_openai_judge_marks_unparseable_or_out_of_range_scores(server: ScriptedServer, answer: str) -> None:
    server.script = lambda n, req, h: chat(answer)
    with pytest.warns(RuntimeWarning, match="malformed answer"):
        assert judge_for(server.url, max_retries=1, on_failure="mark").quality(["p"], ["c"]) == [None]
    assert len(server.requests) == 2


def test_openai_judge_retries_after_timeout(server: ScriptedServer) -> None:
    server.script = lambda n, req, h: (*chat("Score: 6")[:2], 1.0 if n == 0 else 0.0)
    start = time.perf_counter()
    assert judge_for(server.url, timeout_s=0.2).quality(["p"], ["c"]) == [pytest.approx(0.6)]
    assert len(server.requests) == 2
    assert time.perf_counter() - start < 1.0  # did not wait for the slow answer


def test_openai_judge_retries_server_errors(server: ScriptedServer) -> None:
    server.script = lambda n, req, h: (503, b"overloaded", 0.0) if n < 2 else chat("Score: 5")
    assert judge_for(server.url).quality(["p"], ["c"]) == [pytest.approx(0.5)]
    assert len(server.requests) == 3


def test_openai_judge_retries_rate_limits(server: ScriptedServer) -> None:
    server.script = lambda n, req, h: (429, b'{"error": "slow down"}', 0.0) if n == 0 else chat("Score: 5")
    assert judge_for(server.url).quality(["p"], ["c"]) == [pytest.approx(0.5)]
    assert len(server.requests) == 2


def test_openai_judge_retries_malformed_bodies(server: ScriptedServer) -> None:
    bad = [
        (200, b"<html>proxy error</html>", 0.0),
        (200, b'{"choices": []}', 0.0),
        (200, b'{"choices": [{"message": {"content": null}}]}', 0.0),
    ]
    server.script = lambda n, req, h: bad[n] if n < len(bad) else chat("Score: 2")
    assert judge_for(server.url).quality(["p"], ["c"]) == [pytest.approx(0.2)]
    assert len(server.requests) == 4


def test_openai_judge_raises_with_url_when_retries_run_out(server: ScriptedServer) -> None:
    server.script = lambda n, req, h: (500, b"internal error", 0.0)
    with pytest.raises(JudgeError) as info:
        judge_for(server.url, max_retries=2).quality(["p"], ["c"])
    message = str(info.value)
    assert server.url + "/chat/completions" in message
    assert "HTTP 500" in message and "3 attempts" in message and "on_failure=mark" in message
    assert len(server.requests) == 3


def test_openai_judge_marks_failures_and_scores_the_rest(server: ScriptedServer) -> None:
    server.script = lambda n, req, h: chat("Score: 8" if completion_of(req) == "good" else "no idea, sorry")
    judge = judge_for(server.url, max_retries=2, on_failure="mark")
    with pytest.warns(RuntimeWarning, match="could not score 1 distinct"):
        assert judge.quality(["p", "p"], ["good", "bad"]) == [pytest.approx(0.8), None]
    assert len(server.requests) == 1 + 3


def test_openai_judge_does_not_retry_client_errors(server: ScriptedServer) -> None:
    server.script = lambda n, req, h: (404, b'{"error": "model not found"}', 0.0)
    with pytest.raises(JudgeError, match="judge.model"):
        judge_for(server.url, on_failure="mark").quality(["p"], ["c"])
    assert len(server.requests) == 1


def test_openai_judge_connection_refused_names_url_quickly() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    start = time.perf_counter()
    with pytest.raises(JudgeError) as info:
        judge_for(url).quality(["p"], ["c"])
    assert time.perf_counter() - start < 2.0
    assert f"{url}/chat/completions" in str(info.value) and "server is running" in str(info.value)


def test_openai_judge_bounds_concurrency(server: ScriptedServer) -> None:
    server.script = lambda n, req, h: (*chat("Score: 5")[:2], 0.05)
    scores = judge_for(server.url, concurrency=2).quality(["p"] * 6, [str(i) for i in range(6)])
    assert scores == [pytest.approx(0.5)] * 6
    assert server.max_in_flight == 2


def test_openai_judge_caches_on_disk_and_dedups(server: ScriptedServer, tmp_path: Path) -> None:
    cache = str(tmp_path / "cache" / "judge.sqlite")
    server.script = lambda n, req, h: chat({"x": "Score: 3", "y": "Score: 9"}[completion_of(req)])
    first = judge_for(server.url, cache_path=cache).quality(["p", "p", "p"], ["x", "y", "x"])
    assert first == [pytest.approx(0.3), pytest.approx(0.9), pytest.approx(0.3)]
    assert len(server.requests) == 2  # the repeated completion was asked once
    again = judge_for(server.url, cache_path=cache).quality(["p", "p"], ["y", "x"])
    assert again == [pytest.approx(0.9), pytest.approx(0.3)]
    assert len(server.requests) == 2
    judge_for(server.url, cache_path=cache, model="other-model").quality(["p"], ["x"])
    assert len(server.requests) == 3  # the key includes the model


def test_openai_judge_sends_api_key_but_never_shows_it(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-0123456789abcdef"
    monkeypatch.delenv("JUDGE_TEST_KEY", raising=False)
    judge_for(server.url, api_key_env="JUDGE_TEST_KEY").quality(["p"], ["c"])
    assert "authorization" not in server.requests[-1][2]

    monkeypatch.setenv("JUDGE_TEST_KEY", secret)
    judge = judge_for(server.url, api_key_env="JUDGE_TEST_KEY", max_retries=1)
    judge.quality(["p"], ["c"])
    assert server.requests[-1][2]["authorization"] == f"Bearer {secret}"

    # A server that echoes the request headers in its error body must not leak the key into our error.
    server.script = lambda n, req, h: (500, json.dumps(h).encode(), 0.0)
    with pytest.raises(JudgeError) as info:
        judge.quality(["p"], ["other"])
    assert "HTTP 500" in str(info.value)
    assert secret not in str(info.value) and secret not in repr(judge) and secret not in str(vars(judge))


def test_openai_judge_works_from_a_thread_and_inside_a_running_loop(server: ScriptedServer) -> None:
    judge = judge_for(server.url)
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(judge.quality(["p"], ["c"])))
    thread.start()
    thread.join(10)
    assert results == [[pytest.approx(0.8)]]

    async def from_async_code() -> list[float | None]:
        return judge.quality(["p"], ["d"])

    assert asyncio.run(from_async_code()) == [pytest.approx(0.8)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"on_failure": "ignore"},
        {"timeout_s": 0},
        {"backoff_s": -1},
        {"max_retries": -1},
        {"concurrency": 0},
        {"base_url": ""},
    ],
)
def test_openai_judge_rejects_bad_settings(kwargs: dict[str, Any]) -> None:
    name, value = next(iter(kwargs.items()))
    with pytest.raises(ValueError, match=f"{name}={value!r}"):
        judge_for("http://127.0.0.1:1/v1", **kwargs)


# ------------------------------------------------------------------------------------------------------------
# LocalModelJudge, on a tiny random Llama with a character-level tokenizer


def save_tiny_lm(path: Path, chars: str) -> Path:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, **{c: i + 2 for i, c in enumerate(dict.fromkeys(chars))}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")
    save_random_lm(path, tokenizer, layers=2)
    return path


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(save_tiny_lm(tmp_path_factory.mktemp("tiny-lm"), string.printable))


PROMPTS = ["Write a haiku about rain", "Name a colour", "Describe the sea"]
COMPLETIONS = ["drops drum on tin roofs", "teal", "grey and restless, it chews the cliffs all winter long"]


def test_local_judge_scores_in_unit_interval_deterministically(tiny_lm: str) -> None:
    judge = LocalModelJudge(name_or_path=tiny_lm, rubric_text=RUBRIC_TEXT, batch_size=2)
    first = judge.quality(PROMPTS, COMPLETIONS)
    assert len(first) == 3 and all(s is not None and 0.0 <= s <= 1.0 for s in first)
    assert judge.quality(PROMPTS, COMPLETIONS) == first
    assert len(set(first)) == 3  # graded by content, not a constant


def test_local_judge_batching_does_not_change_scores(tiny_lm: str) -> None:
    judge = LocalModelJudge(name_or_path=tiny_lm, rubric_text=RUBRIC_TEXT, batch_size=1)
    one = judge.quality(PROMPTS, COMPLETIONS)
    judge.batch_size = 3
    three = judge.quality(PROMPTS, COMPLETIONS)
    assert three == [pytest.approx(s, abs=1e-5) for s in one]  # left padding is masked out


def test_local_judge_bad_path_names_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(JudgeError, match="no-such-model") as info:
        LocalModelJudge(name_or_path=missing, rubric_text=RUBRIC_TEXT)
    assert missing in str(info.value) and "local directory" in str(info.value)


def test_local_judge_needs_single_token_digits(tmp_path: Path) -> None:
    path = save_tiny_lm(tmp_path / "letters-only", string.ascii_letters + " .:()-\n")
    with pytest.raises(JudgeError, match="digit '0'"):
        LocalModelJudge(name_or_path=str(path), rubric_text=RUBRIC_TEXT)


# ------------------------------------------------------------------------------------------------------------
# Config and make_judge


def compose(name: str, **overrides: Any) -> JudgeConfig:
    """conf/judge/<name>.yaml on top of the structured config, as Hydra composes it (unknown keys fail)."""
    cfg = OmegaConf.merge(OmegaConf.structured(JudgeConfig), OmegaConf.load(CONF / f"{name}.yaml"), overrides)
    judge_cfg = OmegaConf.to_object(cfg)
    assert isinstance(judge_cfg, JudgeConfig)
    return judge_cfg


def rubric(prompt: str, completion: str) -> float:
    return min(1.0, len(completion) / 20)


def test_make_judge_builds_each_configured_type(tiny_lm: str) -> None:
    assert sorted(p.stem for p in CONF.glob("*.yaml")) == ["local", "openai", "rubric"]
    judge = make_judge(compose("rubric"), rubric=rubric, rubric_text=RUBRIC_TEXT)
    assert isinstance(judge, RubricJudge) and judge.quality(["p"], ["ten chars!"]) == [0.5]

    judge = make_judge(compose("local", name_or_path=tiny_lm), rubric=rubric, rubric_text=RUBRIC_TEXT)
    assert isinstance(judge, LocalModelJudge) and judge.name_or_path == tiny_lm and judge.batch_size == 16

    cfg = compose("openai", base_url="http://judge:9000/v1", on_failure="mark", cache_path="/tmp/c.sqlite")
    judge = make_judge(cfg, rubric=rubric, rubric_text=RUBRIC_TEXT)
    assert isinstance(judge, OpenAIJudge)
    assert judge.url == "http://judge:9000/v1/chat/completions"
    assert (judge.on_failure, judge.cache_path) == ("mark", "/tmp/c.sqlite")
    assert (judge.model, judge.timeout_s, judge.max_retries, judge.concurrency) == ("gpt-4o-mini", 30.0, 3, 8)
    assert judge.rubric_text == RUBRIC_TEXT


def test_make_judge_accepts_a_dictconfig() -> None:
    cfg = OmegaConf.merge(OmegaConf.structured(JudgeConfig), {"type": "openai"})
    assert isinstance(make_judge(cfg, rubric=rubric, rubric_text=RUBRIC_TEXT), OpenAIJudge)  # type: ignore[arg-type]


def test_make_judge_rejects_unknown_type() -> None:
    with pytest.raises(ValueError, match="unknown judge type 'gpt'; known types: rubric, local, openai"):
        make_judge(JudgeConfig(type="gpt"), rubric=rubric, rubric_text=RUBRIC_TEXT)


def test_make_judge_local_needs_name_or_path() -> None:
    with pytest.raises(ValueError, match="judge.name_or_path"):
        make_judge(compose("local"), rubric=rubric, rubric_text=RUBRIC_TEXT)


@pytest.mark.parametrize(("field", "value"), [("on_failure", "skip"), ("distinct_weight", 1.5)])
def test_make_judge_rejects_bad_values(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=f"{field}={value!r}"):
        make_judge(JudgeConfig(type="openai", **{field: value}), rubric=rubric, rubric_text=RUBRIC_TEXT)


# ------------------------------------------------------------------------------------------------------------
# judged_scores


def test_near_copies_count_as_partly_redundant() -> None:
    d = distinctiveness(["p"] * 3, ["kavium", "kavion", "zoltar"])
    assert d[2] > d[0] > 0.0 and d[0] == pytest.approx(d[1])


def test_collapsed_group_scores_below_varied_group_of_equal_quality() -> None:
    judge = RubricJudge(lambda p, c: 0.8)
    collapsed = judged_scores(judge, ["p"] * 4, ["The moon hums."] * 4)
    varied = judged_scores(judge, ["p"] * 4, ["ab", "cd", "ef", "gh"])  # not even a character bigram shared
    assert varied == [pytest.approx(0.8)] * 4
    assert all(c is not None and c < min(v for v in varied if v is not None) for c in collapsed)


def test_judged_scores_keeps_marked_samples_none(server: ScriptedServer) -> None:
    server.script = lambda n, req, h: chat("Score: 8" if completion_of(req) != "bad" else "?")
    judge = judge_for(server.url, max_retries=0, on_failure="mark")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = judged_scores(judge, ["p", "q"], ["good", "bad"])
    assert scores[1] is None and scores[0] == pytest.approx(0.8)
    assert len(caught) == 2  # the judge's failure, and judged_scores' missing-reward notice
