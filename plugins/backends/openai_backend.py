"""Generation backend ``openai``: sampling and scoring through OpenAI-compatible servers (vLLM, SGLang,
llama.cpp), over the ``/v1/completions`` API.

Every request goes out on its own, many at once (``concurrency`` threads over one connection pool), spread
over the servers of ``base_url`` in turn: several servers give data-parallel rollouts. A request that
fails on the way (connection lost, timeout, HTTP 429/5xx) is tried again ``retries`` times with
exponential back-off; then, like a refused feature (another HTTP 4xx) or an answer that is not the JSON
the API promises, it stops the run in one line.

What a server can do is probed once per server before anything runs (``check``, called at config time):
log-probs of sampled tokens, and log-probs of given text (``echo`` + ``logprobs``, which ``score`` uses).
A server that answers ``n`` samples with one choice (llama-cpp-python) is asked ``n`` times instead.

Log-probs are the server's own: ``Generation.token_logprobs`` covers the tokens that lie inside the
returned text (what the server cut with a stop string is left out), and ``score`` counts the tokens that
hold part of the continuation, by the server's ``text_offset``, so the boundary is the server's own
tokenisation. vLLM and llama.cpp report the model's log-probs before temperature and top-p, like the
transformers backend.

Policy updates: with ``launch`` (a command template, ``vllm serve {model} --port {port}``) the backend
writes the policy into a model folder (``launch_format=gguf``: one GGUF file, for llama.cpp), starts the
server itself, and after each training stage (hook ``policy_updated``) writes the new policy and starts
it again. Without ``launch`` the server's weights never change, so a run that trains the policy is
refused before it starts (``follows_policy``); ``itool eval`` and ``itool annotate`` use it as it is.
"""

from __future__ import annotations

import atexit
import json
import os
import random
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from itool import hookimpl
from itool.components import Generation, GenerationRequest, Score
from itool.errors import ItoolError

RETRIED_STATUS = {408, 429, 500, 502, 503, 504}


class OpenAIBackendOptions(BaseModel):
    base_url: list[str] = Field(
        default_factory=list,
        description="Server address(es), e.g. http://127.0.0.1:8000 (a list or comma-separated: requests are "
                    "spread over them). Not used with launch.")
    model: str | None = Field(None, description="Model name sent with each request (default: the server's first).")
    api_key_env: str | None = Field(None, description="Environment variable holding the API key (sent as a Bearer token).")
    concurrency: int = Field(16, ge=1, le=1024, description="Requests in flight at once, over all servers.")
    timeout: float = Field(300.0, gt=0, description="Seconds to wait for one answer.")
    retries: int = Field(2, ge=0, le=10, description="Further tries of a request that failed on the way (back-off 0.5 s, 1 s, 2 s ...).")
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="Server-specific fields added to every completion request (llama.cpp: top_k=0, min_p=0, "
                    "repeat_penalty=1 for plain temperature/top-p sampling).")
    launch: str | None = Field(
        None, description="Command that starts a server for {model} on {port} (e.g. 'vllm serve {model} --port {port}'): "
                          "the backend runs it, and again with the new policy after each training stage.")
    launch_format: Literal["hf", "gguf"] = Field(
        "hf", description="How the policy is written for launch: a Hugging Face folder, or one GGUF file (llama.cpp).")
    gguf_source: Path | None = Field(
        None, description="With launch_format=gguf: the GGUF the policy was loaded from, whose metadata the written "
                          "file takes (default: the bundled SmolLM2 GGUF).")
    startup_timeout: float = Field(600.0, gt=0, description="Seconds a launched server may take to answer.")

    @field_validator("base_url", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("base_url")
    @classmethod
    def _http(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"base_url {url!r} must start with http:// or https://")
        return [url.rstrip("/").removesuffix("/v1") for url in urls]

    @field_validator("launch")
    @classmethod
    def _placeholders(cls, template: str | None) -> str | None:
        if template is not None:
            missing = [p for p in ("{model}", "{port}") if p not in template]
            if missing:
                raise ValueError(f"launch must contain {' and '.join(missing)}, got {template!r}")
        return template


# -- the API's answers -----------------------------------------------------------------------------------
class _Logprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    text_offset: list[int]


class _Choice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None = None
    logprobs: _Logprobs | None = None


class _Completion(BaseModel):
    choices: list[_Choice] = Field(min_length=1)


class _Models(BaseModel):
    class _Model(BaseModel):
        id: str

    data: list[_Model]


def _token_spans(logprobs: _Logprobs) -> list[tuple[int, int, float | None]]:
    """(start, end, log-prob) of each token, in characters of the text the offsets count in."""
    offsets = logprobs.text_offset
    ends = [*offsets[1:], offsets[-1] + len(logprobs.tokens[-1])] if offsets else []
    return list(zip(offsets, ends, logprobs.token_logprobs))


# -- HTTP ------------------------------------------------------------------------------------------------
class _Client:
    """POST/GET with bounded retries and back-off; every failure becomes one line naming the server."""

    def __init__(self, opts: OpenAIBackendOptions):
        import httpx2

        headers = {}
        if opts.api_key_env:
            key = os.environ.get(opts.api_key_env)
            if not key:
                raise ItoolError(f"backend openai: api_key_env={opts.api_key_env} is set, but ${opts.api_key_env} is empty")
            headers["Authorization"] = f"Bearer {key}"
        self.httpx = httpx2
        self.retries = opts.retries
        self.http = httpx2.Client(
            headers=headers, timeout=httpx2.Timeout(opts.timeout, connect=min(10.0, opts.timeout)),
            limits=httpx2.Limits(max_connections=opts.concurrency, max_keepalive_connections=opts.concurrency))

    def request(self, method: str, url: str, payload: dict[str, Any] | None = None) -> Any:
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(0.5 * 2 ** (attempt - 1))
            try:
                response = self.http.request(method, url, json=payload)
            except self.httpx.TimeoutException:
                problem = f"no answer within {self.http.timeout.read:g} s"
                continue
            except self.httpx.TransportError as exc:
                problem = f"cannot reach the server ({type(exc).__name__}: {str(exc) or 'connection lost'})"
                continue
            if response.status_code in RETRIED_STATUS:
                problem = f"HTTP {response.status_code}: {_error_message(response)}"
                continue
            if response.status_code >= 400:
                raise ItoolError(f"backend openai: {url} refused the request (HTTP {response.status_code}): "
                                 f"{_error_message(response)}")
            try:
                return response.json()
            except ValueError:
                raise ItoolError(f"backend openai: {url} answered with malformed JSON: "
                                 f"{_one_line(response.text)!r}") from None
        tries = f" (after {self.retries + 1} tries)" if self.retries else ""
        raise ItoolError(f"backend openai: {url}: {problem}{tries}")

    def close(self) -> None:
        self.http.close()


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def _error_message(response: Any) -> str:
    """The server's own words: OpenAI's ``{"error": {"message": ...}}``, FastAPI's ``{"detail": ...}``, or the body."""
    try:
        body = response.json()
    except ValueError:
        return _one_line(response.text) or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error", body.get("detail", body.get("message", body)))
        if isinstance(error, dict):
            error = error.get("message", error)
        return _one_line(error if isinstance(error, str) else json.dumps(error))
    return _one_line(json.dumps(body))


def _parse(model: type[BaseModel], data: Any, url: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "answer"
        raise ItoolError(f"backend openai: {url} answered with malformed JSON for the API ({where}: {err['msg']})") from None


# -- capabilities ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Server:
    """One server as probed: its address, the model name to send, and whether it answers ``n`` > 1 at once."""

    url: str
    model: str
    samples_per_request: bool


_PROBE_PROMPT = "The capital of France is"


def _ask(client: _Client, url: str, payload: dict[str, Any] | None, feature: str) -> Any:
    """One probing request; a failure says which feature was being probed."""
    try:
        return client.request("POST" if payload else "GET", url, payload)
    except ItoolError as exc:
        raise ItoolError(f"{exc} (probing {feature})") from None


_probed: dict[tuple[str, str | None], Server] = {}


def probe(client: _Client, url: str, model: str | None) -> Server:
    """What the server can do, asked once per process (the config-time check and the backend share it);
    refuse, naming the feature, what the backend cannot do without."""
    if (url, model) not in _probed:
        _probed[url, model] = _probe(client, url, model)
    return _probed[url, model]


def _probe(client: _Client, url: str, model: str | None) -> Server:
    models = _parse(_Models, _ask(client, f"{url}/v1/models", None, "the model list, GET /v1/models"), url)
    if model is None:
        if not models.data:
            raise ItoolError(f"backend openai: {url} serves no model (GET /v1/models is empty)")
        model = models.data[0].id
    completions = f"{url}/v1/completions"
    sampled = _parse(_Completion, _ask(client, completions, {
        "model": model, "prompt": _PROBE_PROMPT, "max_tokens": 2, "n": 2, "temperature": 1.0, "seed": 0,
        "logprobs": 1}, "sampling with n, seed and logprobs"), url)
    if any(c.logprobs is None or len(c.logprobs.token_logprobs) != len(c.logprobs.tokens) for c in sampled.choices):
        raise ItoolError(f"backend openai: {url} does not return log-probs of sampled tokens (logprobs), "
                         f"which searches need as priors")
    echoed = _parse(_Completion, _ask(client, completions, {
        "model": model, "prompt": _PROBE_PROMPT, "max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": 1},
        "log-probs of given text, echo with logprobs, which scoring needs"), url)
    logprobs = echoed.choices[0].logprobs
    if (logprobs is None or not echoed.choices[0].text.startswith(_PROBE_PROMPT)
            or sum(end <= len(_PROBE_PROMPT) and lp is not None for _, end, lp in _token_spans(logprobs)) < 2):
        raise ItoolError(f"backend openai: {url} does not return log-probs of the prompt (echo with logprobs), "
                         f"which scoring needs (the perplexity sampler, the self-judge reward)")
    return Server(url, model, samples_per_request=len(sampled.choices) == 2)


# -- the backend -----------------------------------------------------------------------------------------
class OpenAIBackend:
    """Samples and scores through one or several OpenAI-compatible servers."""

    def __init__(self, policy: Any, opts: OpenAIBackendOptions):
        self.policy = policy
        self.opts = opts
        self.client = _Client(opts)
        self.launched: LaunchedServer | None = None
        self.turn = 0  # where the next request's server comes in the rotation
        if opts.launch:
            self.launched = LaunchedServer(opts)
            self.servers = [self.launched.start(policy)]
        else:
            self.servers = [probe(self.client, url, opts.model) for url in opts.base_url]

    def follow(self, policy: Any) -> None:
        """Serve ``policy`` from now on (after a training stage changed it): write it and restart the server."""
        if self.launched is None:
            raise ItoolError("backend openai: cannot follow a policy update without launch")
        self.policy = policy
        self.servers = [self.launched.start(policy)]

    def close(self) -> None:
        if self.launched is not None:
            self.launched.stop()
        self.client.close()

    # -- requests ---------------------------------------------------------------------------------------
    def _complete(self, server: Server, payload: dict[str, Any]) -> list[_Choice]:
        url = f"{server.url}/v1/completions"
        answer = _parse(_Completion, self.client.request("POST", url, {
            **self.opts.extra_body, "model": server.model, **payload}), url)
        return sorted(answer.choices, key=lambda c: c.index)

    def _run(self, payloads: list[dict[str, Any]]) -> list[list[_Choice]]:
        """All requests at once, at most ``concurrency`` in flight, dealt to the servers in turn (the same
        request to the same server, run after run); the first failure cancels the rest."""
        servers = [self.servers[(self.turn + k) % len(self.servers)] for k in range(len(payloads))]
        self.turn += len(payloads)
        if len(payloads) <= 1:
            return [self._complete(s, p) for s, p in zip(servers, payloads)]
        with ThreadPoolExecutor(max_workers=min(self.opts.concurrency, len(payloads))) as pool:
            futures = [pool.submit(self._complete, s, p) for s, p in zip(servers, payloads)]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise

    # -- generation -------------------------------------------------------------------------------------
    def generate(self, requests: list[GenerationRequest]) -> list[list[Generation]]:
        # Seeds come from the stage's seeded random stream: the same run asks the same server the same.
        together = all(s.samples_per_request for s in self.servers)
        payloads, owners = [], []
        for i, request in enumerate(requests):
            base = {"prompt": request.prompt, "max_tokens": request.max_new_tokens, "temperature": request.temperature,
                    "top_p": request.top_p, "logprobs": 1, **({"stop": request.stop} if request.stop else {})}
            for n in ([request.n] if together else [1] * request.n):
                payloads.append({**base, "n": n, "seed": random.getrandbits(31)})
                owners.append(i)
        results: list[list[Generation]] = [[] for _ in requests]
        for owner, choices in zip(owners, self._run(payloads)):
            results[owner] += [self._generation(choice) for choice in choices]
        for request, generations in zip(requests, results):
            if len(generations) != request.n:
                raise ItoolError(f"backend openai: asked for {request.n} samples, the server returned {len(generations)}")
        return results

    @staticmethod
    def _generation(choice: _Choice) -> Generation:
        """The text's tokens only: those the server cut with a stop string (or its EOS) end after the text."""
        logprobs = []
        if choice.logprobs is not None and choice.logprobs.tokens:
            spans = _token_spans(choice.logprobs)
            start = spans[0][0]
            logprobs = [lp for _, end, lp in spans if end - start <= len(choice.text) and lp is not None]
        finish = "stop" if choice.finish_reason in ("stop", "eos", "stop_sequence") else "length"
        return Generation(choice.text, logprobs, finish)

    # -- scoring ----------------------------------------------------------------------------------------
    def score(self, prompts: list[str], continuations: list[str]) -> list[Score]:
        payloads = [{"prompt": p + c, "max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": 1}
                    for p, c in zip(prompts, continuations, strict=True)]
        return [self._score(choices[0], len(p), len(p) + len(c))
                for p, c, choices in zip(prompts, continuations, self._run(payloads))]

    @staticmethod
    def _score(choice: _Choice, boundary: int, end: int) -> Score:
        """Tokens holding any character of the continuation (the server's own boundary), up to its end.

        Offsets are aligned on the end of the echoed text: llama.cpp counts them without the text of
        special tokens (the chat template's), which lie in the prompt, before the continuation."""
        if choice.logprobs is None or not choice.logprobs.tokens:
            raise ItoolError("backend openai: the server returned no prompt log-probs (echo with logprobs)")
        spans = _token_spans(choice.logprobs)
        shift = len(choice.text) - spans[-1][1]
        picked = [lp for start, stop, lp in spans if stop + shift > boundary and start + shift < end]
        if any(lp is None for lp in picked):
            raise ItoolError("backend openai: the server returned a prompt token without its log-prob")
        return Score(logprob_sum=float(sum(picked)), n_tokens=len(picked))


# -- a server the backend starts itself ------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LaunchedServer:
    """The server process of ``launch``, serving the policy last written by :meth:`start`."""

    def __init__(self, opts: OpenAIBackendOptions):
        self.opts = opts
        self.folder = Path(tempfile.mkdtemp(prefix="itool-served-"))
        self.process: subprocess.Popen | None = None
        self.log = self.folder / "server.log"
        atexit.register(self.stop)

    def start(self, policy: Any) -> Server:
        """Write ``policy``, (re)start the server on it and wait until it answers; then probe it."""
        self.stop()
        model = self._write(policy)
        port = _free_port()
        command = shlex.split(self.opts.launch.replace("{model}", shlex.quote(str(model))).replace("{port}", str(port)))
        if shutil.which(command[0]) is None:
            raise ItoolError(f"backend openai: launch command {command[0]!r} not found")
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        self._wait(url)
        client = _Client(self.opts)
        try:
            return probe(client, url, self.opts.model)
        finally:
            client.close()

    def _write(self, policy: Any) -> Path:
        target = self.folder / ("model.gguf" if self.opts.launch_format == "gguf" else "model")
        if target.is_dir():
            shutil.rmtree(target)
        if self.opts.launch_format == "gguf":
            from itool.plugins.backends.gguf_export import write_gguf
            from itool.plugins.models.transformers_loader import bundled_gguf

            write_gguf(policy.model, self.opts.gguf_source or bundled_gguf(), target)
        else:
            policy.model.save_pretrained(target)
            policy.tokenizer.save_pretrained(target)
        return target

    def _wait(self, url: str) -> None:
        import httpx2

        deadline = time.monotonic() + self.opts.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ItoolError(f"backend openai: the launched server exited with code {self.process.returncode}: "
                                 f"{self._last_line()} (log: {self.log})")
            try:
                if httpx2.get(f"{url}/v1/models", timeout=2.0).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            time.sleep(0.5)
        self.stop()
        raise ItoolError(f"backend openai: the launched server did not answer within {self.opts.startup_timeout:g} s "
                         f"(log: {self.log})")

    def _last_line(self) -> str:
        lines = self.log.read_text(errors="replace").strip().splitlines() if self.log.exists() else []
        return _one_line(lines[-1]) if lines else "no output"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# -- registration ----------------------------------------------------------------------------------------
def openai_backend(policy: Any, opts: OpenAIBackendOptions) -> OpenAIBackend:
    """Sampling and scoring through OpenAI-compatible servers (vLLM, SGLang, llama.cpp), many requests at once."""
    return OpenAIBackend(policy, opts)


def check(opts: OpenAIBackendOptions) -> None:
    """Before the run: every server answers and offers what the backend needs (a launched one is checked
    when it starts)."""
    if opts.launch:
        program = shlex.split(opts.launch)[0]
        if shutil.which(program) is None:
            raise ItoolError(f"backend openai: launch command {program!r} not found")
        return
    if not opts.base_url:
        raise ItoolError("backend openai needs base_url=http://HOST:PORT (or launch='... {model} ... {port}')")
    client = _Client(opts)
    try:
        for url in opts.base_url:
            probe(client, url, opts.model)
    finally:
        client.close()


def follows_policy(opts: OpenAIBackendOptions) -> bool:
    """Only a server the backend launched itself can be restarted on a trained policy."""
    return opts.launch is not None


@hookimpl
def register_backends(register):
    register("openai", openai_backend, options=OpenAIBackendOptions, check=check, follows_policy=follows_policy)


@hookimpl
def policy_updated(ctx, adapter_dir):
    # Only a backend already built needs to follow; one built later starts on the policy as it is then.
    backend = vars(ctx).get("backend")
    if isinstance(backend, OpenAIBackend):
        backend.follow(ctx.policy)
