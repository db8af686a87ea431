"""The GPU check behind ``benchmarks/gpu_check.sh`` (run that; this is its Python half).

1. Generation throughput, greedy, on real BFCL prompts (each batch: that many prompts), at batch 1, 64
   and 256: the transformers backend through transformers' continuous batching (what it takes on CUDA),
   the same backend through its own per-step loop (what it takes on a CPU, and on CUDA for a search),
   and plain ``model.generate`` (left-padded batch, dynamic cache). Generated tokens per second, seconds,
   peak memory, and whether the three gave the same greedy texts.
2. The paper preset end to end on 64 samples (``itool run --preset paper --train-limit 64 --eval-limit 64``)
   in a child process, within what is left of the time budget: seconds per stage, its evaluation
   summaries, the process's peak memory.

Everything goes to ``<out>/gpu_check.json`` and ``<out>/gpu_check.md`` (also printed). ``--cpu-smoke``
runs the same logic on the CPU at toy sizes, to check the script before device time is spent.

    python benchmarks/gpu_check.py [--cpu-smoke] [--out DIR] [--budget-s 450]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

STARTED = time.monotonic()
MODEL = os.environ.get("ITOOL_GGUF") or "smollm2-135m-instruct"


def elapsed() -> float:
    return time.monotonic() - STARTED


def peak_memory_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)


def bfcl_prompts(registry: Any, tokenizer: Any, count: int) -> tuple[list[str], str]:
    """``count`` prompts of BFCL's test split rendered as a run renders them (repeated if too few)."""
    dataset, fmt = registry.get("dataset", "bfcl"), registry.get("format", "python")
    render = fmt.obj(fmt.parse_options({}))
    samples = dataset.obj("test", dataset.parse_options({}))
    prompts = [render.render_prompt(s, tokenizer) for s in samples[:count]]
    return [prompts[k % len(prompts)] for k in range(count)], f"BFCL test split, first {len(prompts)} samples"


def plain_generate(policy: Any, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Hugging Face ``generate`` on the left-padded batch, greedy: the baseline."""
    tokenizer = policy.tokenizer
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(policy.device)
    with torch.inference_mode():
        out = policy.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)
    return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)


def count_tokens(tokenizer: Any, texts: list[str]) -> int:
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)


def throughput(registry: Any, policy: Any, batches: list[int], max_new_tokens: int, deadline: float) -> tuple[list[dict], str]:
    from itool.components import GenerationRequest

    factory = registry.get("backend", "transformers")
    room = {"batch_size": max(batches), "kv_tokens": 10**8, "prefill_tokens": 1 << 16}
    backends = {name: factory.obj(policy, factory.parse_options({**room, "engine": engine}))
                for name, engine in (("backend: continuous batching", "continuous-batching"), ("backend: loop", "loop"))}
    prompts, source = bfcl_prompts(registry, policy.tokenizer, max(batches))

    def run(method: str, batch: list[str]) -> list[str]:
        if method == "model.generate":
            return plain_generate(policy, batch, max_new_tokens)
        requests = [GenerationRequest(p, max_new_tokens=max_new_tokens, temperature=0.0) for p in batch]
        return [g[0].text for g in backends[method].generate(requests)]

    methods = [*backends, "model.generate"]
    for method in methods:  # untimed: first-call costs (CUDA context, kernels) count against no one
        run(method, prompts[:1])
    rows = []
    for size in batches:
        texts = {}
        for method in methods:
            if time.monotonic() > deadline:
                rows.append({"batch": size, "method": method, "skipped": "time budget spent"})
                continue
            peak_memory_reset(policy.device)
            start = time.perf_counter()
            texts[method] = run(method, prompts[:size])
            if policy.device.type == "cuda":
                torch.cuda.synchronize(policy.device)
            seconds = time.perf_counter() - start
            tokens = count_tokens(policy.tokenizer, texts[method])
            rows.append({"batch": size, "method": method, "seconds": round(seconds, 3), "tokens": tokens,
                         "tokens_per_s": round(tokens / seconds, 1), "peak_gib": peak_memory_gib(policy.device)})
            print(json.dumps(rows[-1]), flush=True)
        if len(texts) == len(methods):
            reference = texts["backend: loop"]
            for row in rows[-len(methods):]:
                row["same_text_as_loop"] = f"{sum(a == b for a, b in zip(texts[row['method']], reference))}/{size}"
    return rows, source


def end_to_end(out: Path, smoke: bool, device: str, timeout: float) -> dict:
    """``itool run --preset paper`` on 64 samples (toy sizes with --cpu-smoke) in a child process."""
    name = "paper64"
    args = ["run", "--preset", "paper", "--model", MODEL, "--device", device, "--runs-dir", str(out / "runs"),
            "--name", name]
    args += (["--train-limit", "8", "--eval-limit", "2", "--rounds", "1", "--warmup", "none",
              "--search-opt", "simulations=1", "--search-opt", "max_depth=1", "--trainer-opt", "epochs=1"]
             if smoke else ["--train-limit", "64", "--eval-limit", "64"])
    peak_file = out / "end_to_end_peak.json"
    started = time.perf_counter()
    try:
        child = subprocess.run([sys.executable, __file__, "--end-to-end-child", str(peak_file), *args],
                               capture_output=True, text=True, timeout=max(timeout, 1))
        returncode, log = child.returncode, child.stdout + child.stderr
    except subprocess.TimeoutExpired as expired:
        returncode = "timeout"
        log = "".join(part.decode(errors="replace") if isinstance(part, bytes) else (part or "")
                      for part in (expired.stdout, expired.stderr))
    (out / "end_to_end.log").write_text(log)
    result: dict[str, Any] = {"command": "itool " + " ".join(args), "returncode": returncode,
                              "seconds": round(time.perf_counter() - started, 1)}
    state_file = out / "runs" / name / "state.json"
    if state_file.is_file():
        state = json.loads(state_file.read_text())
        results = state.get("results", {})
        result["stage_seconds"] = {stage: round(r.get("seconds", 0), 1) for stage, r in results.items()}
        result["eval_overall"] = {stage: {k: v for k, v in r["summary"].items() if k.lower() in ("overall", "accuracy")}
                                  for stage, r in results.items() if isinstance(r.get("summary"), dict)}
    if peak_file.is_file():
        result["peak_gib"] = json.loads(peak_file.read_text())["peak_gib"]
    if returncode != 0:
        result["log_tail"] = log[-2000:]
    return result


def end_to_end_child(peak_file: str, args: list[str]) -> None:
    """Run the itool CLI in this process, then record its peak GPU memory (whatever the exit)."""
    from itool.cli import main

    sys.argv = ["itool", *args]
    try:
        main()
    finally:
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        Path(peak_file).write_text(json.dumps({"peak_gib": peak_memory_gib(device)}))


def markdown(report: dict) -> str:
    lines = [f"# GPU check ({report['environment']['device_name']})", "",
             "Environment: " + ", ".join(f"{k} {v}" for k, v in report["environment"].items()), "",
             f"## Generation throughput (greedy, {report['max_new_tokens']} new tokens at most; "
             f"prompts: {report['prompts']})", "",
             "| batch | method | tokens/s | seconds | tokens | peak GiB | same text as loop |", "|---|---|---|---|---|---|---|"]
    for row in report["throughput"]:
        if "skipped" in row:
            lines.append(f"| {row['batch']} | {row['method']} | skipped: {row['skipped']} | | | | |")
        else:
            lines.append(f"| {row['batch']} | {row['method']} | {row['tokens_per_s']} | {row['seconds']} | "
                         f"{row['tokens']} | {row['peak_gib']} | {row.get('same_text_as_loop', '')} |")
    e2e = report["end_to_end"]
    lines += ["", "## Paper preset end to end", "", f"`{e2e['command']}`: exit {e2e['returncode']}, "
              f"{e2e['seconds']} s, peak {e2e.get('peak_gib')} GiB", ""]
    if e2e.get("stage_seconds"):
        lines += ["| stage | seconds | evaluation |", "|---|---|---|"]
        lines += [f"| {stage} | {s} | {e2e['eval_overall'].get(stage, '')} |" for stage, s in e2e["stage_seconds"].items()]
    if e2e.get("log_tail"):
        lines += ["", "```", e2e["log_tail"], "```"]
    lines += ["", f"Total: {report['total_seconds']} s"]
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--end-to-end-child":
        return end_to_end_child(sys.argv[2], sys.argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="toy sizes on the CPU (checks the script)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu_check_out"))
    parser.add_argument("--budget-s", type=float, default=450, help="time for everything (the device's limit minus setup)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    import transformers

    from itool.registry import Registry

    device = "cpu" if args.cpu_smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here (use --cpu-smoke to check the script on a CPU)")
    batches, max_new_tokens = ([1, 2, 3], 4) if args.cpu_smoke else ([1, 64, 256], 128)
    registry = Registry()
    if registry.failures:
        print("plugins that failed to load:", *(f"{f.package}: {f.error}" for f in registry.failures), sep="\n  ")
    loader = registry.get("model", "transformers")
    policy = loader.obj(MODEL, loader.parse_options({}), device=device, dtype="auto")
    report: dict[str, Any] = {
        "environment": {"device_name": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
                        "dtype": str(policy.dtype).removeprefix("torch."), "torch": torch.__version__,
                        "transformers": transformers.__version__, "python": platform.python_version(),
                        "model": MODEL},
        "max_new_tokens": max_new_tokens}
    # Two thirds of the budget at most for throughput; the rest is the end-to-end run's.
    report["throughput"], report["prompts"] = throughput(registry, policy, batches, max_new_tokens,
                                                         deadline=time.monotonic() + args.budget_s * 2 / 3)
    del policy
    if device == "cuda":
        torch.cuda.empty_cache()
    report["end_to_end"] = end_to_end(args.out, args.cpu_smoke, device, timeout=args.budget_s - elapsed())
    report["total_seconds"] = round(elapsed(), 1)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    text = markdown(report)
    (args.out / "gpu_check.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
