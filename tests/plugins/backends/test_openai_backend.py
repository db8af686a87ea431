"""The openai backend against a real OpenAI-compatible server: llama-cpp-python's, started here on
127.0.0.1 over the bundled SmolLM2 GGUF, the very file the transformers loader dequantises.

llama.cpp computes with the Q4_1 weights as they are (activations rounded to 8 bit in each matrix
product), the in-process backend with their exact dequantised values in float32, so the two agree on
log-probs within the tolerance measured below, not bit for bit. Only broken servers are faked (a few
lines of ``http.server`` that answer garbage): there is no real server that does that on purpose.

The server samples with llama.cpp's defaults unless told otherwise (top-k 40, min-p 0.05, repeat
penalty 1.1); the tests send ``PLAIN_SAMPLING`` so that temperature and top-p alone shape sampling, as
in the transformers backend."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx2
import pytest
from click.testing import CliRunner

from itool.components import GenerationRequest
from itool.errors import ItoolError
from itool.plugins.backends.openai_backend import OpenAIBackend, OpenAIBackendOptions, check
from itool.plugins.backends.transformers_backend import TransformersBackend, TransformersBackendOptions
from itool.plugins.models.transformers_loader import bundled_gguf

PLAIN_SAMPLING = {"top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0}
# Measured on ten answers of 2-17 tokens: the server's log-prob sum differs from the in-process one by up
# to 2.7% of it (0.86 nats of -34.5; llama.cpp multiplies the Q4_1 weights by activations rounded to 8 bit,
# and the gap sits in unlikely tokens, so it grows with how unlikely the text is), and its log-probs of a
# text while generating it (one token at a time) from its scoring of the same text (all at once) by 1.4%
# (0.22 of -16.1). A token counted on the wrong side of the prompt/continuation boundary costs whole nats.
def close(served: float, reference: float) -> bool:
    return served == pytest.approx(reference, rel=0.05, abs=0.2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """``python -m llama_cpp.server`` on a free port of 127.0.0.1, its output in ``log``."""

    def __init__(self, log: Path, n_ctx: int = 1024):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_gguf()), "--host", "127.0.0.1",
                 "--port", str(self.port), "--n_ctx", str(n_ctx), "--n_threads", "2", "--logits_all", "true",
                 "--verbose", "false"], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"llama_cpp.server exited: {log.read_text()[-2000:]}"
            try:
                if httpx2.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    return
            except httpx2.TransportError:
                time.sleep(0.3)
        self.kill()
        raise AssertionError(f"llama_cpp.server did not answer within 180 s: {log.read_text()[-2000:]}")

    def completions_answered(self) -> int:
        return self.log.read_text(errors="replace").count("POST /v1/completions HTTP/1.1\" 200")

    def kill(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = LlamaServer(tmp_path_factory.mktemp("server") / "server.log")
    yield running
    running.kill()


@pytest.fixture(scope="module")
def second_server(tmp_path_factory):
    running = LlamaServer(tmp_path_factory.mktemp("server2") / "server.log")
    yield running
    running.kill()


def options(*urls: str, **settings) -> OpenAIBackendOptions:
    return OpenAIBackendOptions(base_url=list(urls), extra_body=PLAIN_SAMPLING, **settings)


@pytest.fixture(scope="module")
def backend(server):
    return OpenAIBackend(None, options(server.url))


def chat(question: str) -> str:
    """SmolLM2's chat format without its default system prompt: llama-cpp-python's server sorts the whole
    vocabulary in Python for every token it reports a log-prob of, so short prompts keep the tests fast."""
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def prompts():
    return [chat(q) for q in ("What is 2+2?", "Name a colour.", "Say hello to Ada in French.")]


def one_line(error: pytest.ExceptionInfo | Exception) -> str:
    message = str(error.value if isinstance(error, pytest.ExceptionInfo) else error)
    assert "\n" not in message and "Traceback" not in message
    return message


# -- generation --------------------------------------------------------------------------------------
def test_n_samples_per_request_each_with_the_log_probs_of_its_tokens(backend, prompts):
    random.seed(0)
    out = backend.generate([GenerationRequest(prompts[0], n=3, max_new_tokens=5, temperature=1.0),
                            GenerationRequest(prompts[1], n=1, max_new_tokens=5, temperature=1.0)])
    assert [len(samples) for samples in out] == [3, 1]
    for samples in out:
        for sample in samples:
            assert sample.finish_reason in ("stop", "length")
            assert 0 < len(sample.token_logprobs) <= 5 and all(lp <= 0 for lp in sample.token_logprobs)
            if sample.finish_reason == "length":
                assert len(sample.token_logprobs) == 5
    assert len({s.text for s in out[0]}) > 1  # sampled, not one answer repeated


def test_the_same_seeded_stream_asks_the_same_and_gets_the_same(backend, prompts):
    requests = [GenerationRequest(prompts[1], n=2, max_new_tokens=4, temperature=1.0)]
    random.seed(7)
    first = backend.generate(requests)
    random.seed(7)
    again = backend.generate(requests)
    random.seed(8)
    other = backend.generate(requests)
    assert [g.text for g in first[0]] == [g.text for g in again[0]]
    assert [g.text for g in first[0]] != [g.text for g in other[0]]


def test_stop_strings_and_max_tokens_end_a_sample_like_the_in_process_backend(backend, prompts):
    (greedy,), = backend.generate([GenerationRequest(prompts[2], max_new_tokens=12, temperature=0)])
    words = greedy.text.split()
    assert len(words) >= 4, greedy.text
    stop = " " + words[2]
    (cut,), = backend.generate([GenerationRequest(prompts[2], max_new_tokens=12, temperature=0, stop=[stop])])
    assert cut.text == greedy.text[:greedy.text.index(stop)] and cut.finish_reason == "stop"
    # the log-probs cover the text's tokens only: a prefix of the uncut sample's
    assert 0 < len(cut.token_logprobs) < len(greedy.token_logprobs)
    assert cut.token_logprobs == pytest.approx(greedy.token_logprobs[:len(cut.token_logprobs)], abs=1e-3)
    (short,), = backend.generate([GenerationRequest(prompts[2], max_new_tokens=3, temperature=0)])
    assert short.finish_reason == "length" and len(short.token_logprobs) == 3
    assert greedy.text.startswith(short.text)


# -- log-probs and scoring ---------------------------------------------------------------------------
def test_the_log_probs_of_generated_text_are_what_the_server_scores_for_that_text(backend, prompts):
    (generated,), = backend.generate([GenerationRequest(prompts[1], max_new_tokens=8, temperature=0)])
    (score,) = backend.score([prompts[1]], [generated.text])
    assert score.n_tokens == len(generated.token_logprobs)
    assert close(score.logprob_sum, sum(generated.token_logprobs))


def test_scoring_agrees_with_the_in_process_backend_on_the_same_weights(backend, prompts, shared_policy_fp32):
    """Within the measured gap (float32 in-process: see ``close``), with the same token counts: a token counted on the
    wrong side of the prompt/continuation boundary, or log-probs shifted by one position, would be off by
    whole nats."""
    pairs = [(prompts[1], "Blue."), (prompts[2], "Bonjour, Ada !"),
             (chat("What is the weather in Paris?"), "[get_weather(city='Paris')]")]
    served = backend.score([p for p, _ in pairs], [c for _, c in pairs])
    local = TransformersBackend(shared_policy_fp32, TransformersBackendOptions()).score(
        [p for p, _ in pairs], [c for _, c in pairs])
    for (_, text), there, here in zip(pairs, served, local):
        assert there.n_tokens == here.n_tokens, text
        assert close(there.logprob_sum, here.logprob_sum), (text, there, here)


# -- many requests, several servers --------------------------------------------------------------------
def test_many_requests_in_flight_come_back_in_order_as_one_at_a_time(server, prompts):
    requests = [GenerationRequest(prompts[i % 3], max_new_tokens=2, temperature=1.0) for i in range(6)]
    random.seed(3)
    together = OpenAIBackend(None, options(server.url, concurrency=8)).generate(requests)
    random.seed(3)
    alone = OpenAIBackend(None, options(server.url, concurrency=1)).generate(requests)
    assert [g[0].text for g in together] == [g[0].text for g in alone]


def test_requests_are_spread_over_several_servers(server, second_server, prompts):
    before = server.completions_answered(), second_server.completions_answered()
    spread = OpenAIBackend(None, options(server.url, second_server.url, concurrency=4))
    out = spread.generate([GenerationRequest(prompts[0], max_new_tokens=2, temperature=1.0) for _ in range(4)])
    assert len(out) == 4
    time.sleep(0.5)  # the access log line follows the answer
    assert server.completions_answered() - before[0] >= 2 and second_server.completions_answered() - before[1] >= 2


# -- failures: one line, no hang -----------------------------------------------------------------------
def test_a_server_killed_mid_request_stops_generation_with_one_line(second_server, prompts):
    doomed = OpenAIBackend(None, options(second_server.url, retries=1, timeout=60))
    caught: list[ItoolError] = []

    def generate():
        try:
            doomed.generate([GenerationRequest(prompts[2], n=4, max_new_tokens=400, temperature=1.0)])
        except ItoolError as exc:
            caught.append(exc)

    worker = threading.Thread(target=generate)
    started = time.monotonic()
    worker.start()
    time.sleep(1.5)
    second_server.kill(signal.SIGKILL)
    worker.join(timeout=60)
    assert not worker.is_alive() and time.monotonic() - started < 30
    message = one_line(caught[0])
    assert second_server.url in message and "cannot reach the server" in message and "after 2 tries" in message


def test_an_unreachable_server_is_refused_before_the_run_in_one_line():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ItoolError) as error:
        check(options(url, retries=1))
    assert one_line(error).startswith(f"backend openai: {url}/v1/models: cannot reach the server (ConnectError")


class FakeBrokenServer(BaseHTTPRequestHandler):
    """Test-only: lists a model, then answers completions with ``self.server.answer(payload)``."""

    def do_GET(self):
        self._send(200, b'{"object": "list", "data": [{"id": "broken"}]}')

    def do_POST(self):
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self._send(*self.server.answer(payload))

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def broken():
    """``broken(answer)``: the URL of a fake server answering completions with ``answer(payload)``."""
    servers = []

    def start(answer):
        fake = ThreadingHTTPServer(("127.0.0.1", 0), FakeBrokenServer)
        fake.answer = answer
        threading.Thread(target=fake.serve_forever, daemon=True).start()
        servers.append(fake)
        return f"http://127.0.0.1:{fake.server_address[1]}"

    yield start
    for fake in servers:
        fake.shutdown()


SAMPLED = {"choices": [{"index": i, "text": " Paris", "finish_reason": "length",
                        "logprobs": {"tokens": [" Paris"], "token_logprobs": [-0.5], "text_offset": [24]}}
                       for i in range(2)]}


@pytest.mark.parametrize("answer, expected", [
    (lambda payload: (200, b'{"choices": [{"text": "Par'), "answered with malformed JSON: '{\"choices\": [{\"text\": \"Par'"),
    (lambda payload: (200, b'{"choices": "none"}'), "answered with malformed JSON for the API (choices: "),
    (lambda payload: (400, b'{"error": {"message": "echo is not supported"}}') if payload.get("echo")
     else (200, json.dumps(SAMPLED).encode()),
     "refused the request (HTTP 400): echo is not supported (probing log-probs of given text, echo with logprobs"),
    (lambda payload: (200, json.dumps({"choices": [{"text": " Paris", "logprobs": None}]}).encode()),
     "does not return log-probs of sampled tokens (logprobs)"),
])
def test_a_broken_server_or_a_missing_feature_is_named_before_the_run_in_one_line(broken, answer, expected):
    with pytest.raises(ItoolError) as error:
        check(options(broken(answer)))
    assert expected in one_line(error)


# -- the commands, end to end ------------------------------------------------------------------------
def served(server) -> list[str]:
    return ["--backend", "openai", "--backend-opt", f"base_url={server.url}",
            "--backend-opt", f"extra_body={json.dumps(PLAIN_SAMPLING)}"]


def test_itool_eval_scores_a_served_model(registry, server, tmp_path):
    from itool.cli import cli

    registry.add_commands(cli)
    before = server.completions_answered()
    out = tmp_path / "eval"
    result = CliRunner().invoke(cli, ["eval", "--categories", "simple_python,irrelevance", "--limit", "1",
                                      "--out", str(out), "--evaluator-opt", "max_new_tokens=16", *served(server)])
    assert result.exit_code == 0, result.output
    verdicts = [json.loads(line) for line in (out / "eval" / "verdicts.jsonl").read_text().splitlines()]
    assert sorted(v["category"] for v in verdicts) == ["irrelevance", "simple_python"]
    time.sleep(0.5)
    assert server.completions_answered() - before >= 2  # probes and the two samples went to the server


def test_itool_run_with_training_is_refused_for_a_server_the_backend_cannot_restart(registry, server, tmp_path):
    from itool.cli import cli

    result = CliRunner().invoke(cli, ["run", "--runs-dir", str(tmp_path), "--name", "served", *served(server)])
    assert result.exit_code == 2
    assert "backend 'openai' cannot follow a policy that training changes" in result.output
    assert not (tmp_path / "served").exists()


@pytest.mark.slow
def test_itool_annotate_with_a_served_annotator(registry, tmp_path):
    """A multi-turn BFCL prompt with all its tools is 6-7k tokens; the retriever's two tools per turn keep
    it small enough for a 4k context and for llama-cpp-python's slow log-probs."""
    from itool.cli import cli

    registry.add_commands(cli)
    big = LlamaServer(tmp_path / "server.log", n_ctx=4096)
    try:
        result = CliRunner().invoke(cli, [
            "annotate", "--search", "dfsdt", "--limit", "1", "--out", str(tmp_path / "paths.jsonl"),
            "--run-dir", str(tmp_path / "run"), "--search-opt", "max_queries=2", "--search-opt", "max_new_tokens=24",
            "--search-opt", "retriever=minilm", "--search-opt", "top_k=2", *served(big)])
        time.sleep(0.5)  # the access log line follows the answer
        answered = big.completions_answered()
    finally:
        big.kill()
    assert result.exit_code == 0, result.output
    assert "pass rate" in result.output
    trees = (tmp_path / "run" / "annotate" / "trees.jsonl").read_text().splitlines()
    assert len(trees) == 1 and json.loads(trees[0])["meta"]["queries"] >= 1
    assert answered >= 2 + json.loads(trees[0])["meta"]["queries"]  # the probes, then every model call


@pytest.mark.slow
def test_a_launched_server_is_restarted_on_the_trained_policy(registry, tmp_path):
    """launch_format=gguf writes the policy as a float32 GGUF: after an adapter is merged, the restarted
    server scores like the in-process backend on the trained weights (float32 on both sides, so closer
    than the Q4_1 server of the other tests)."""
    from peft import LoraConfig, get_peft_model

    loader = registry.get("model", "transformers")
    policy = loader.obj("smollm2-135m-instruct", loader.parse_options({}), device="cpu", dtype="float32")
    launch = (f"{sys.executable} -m llama_cpp.server --model {{model}} --port {{port}} --host 127.0.0.1 "
              "--n_ctx 1024 --n_threads 2 --verbose false")
    backend = OpenAIBackend(policy, OpenAIBackendOptions(launch=launch, launch_format="gguf", extra_body=PLAIN_SAMPLING))
    try:
        texts = [chat("Say hello to Ada in French.")], ["Bonjour, Ada !"]
        before = backend.score(*texts)[0]
        peft_model = get_peft_model(policy.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                             init_lora_weights=False))
        peft_model.save_pretrained(tmp_path / "adapter")
        policy.model = peft_model.unload()
        policy.merge_adapter(tmp_path / "adapter")
        first_server = backend.launched.process.pid
        backend.follow(policy)
        assert backend.launched.process.pid != first_server
        after = backend.score(*texts)[0]
        here = TransformersBackend(policy, TransformersBackendOptions()).score(*texts)[0]
    finally:
        backend.close()
    assert abs(after.logprob_sum - before.logprob_sum) > 1.0  # the adapter changed what the server computes
    assert after.n_tokens == here.n_tokens
    assert after.logprob_sum == pytest.approx(here.logprob_sum, abs=0.01 * here.n_tokens)
