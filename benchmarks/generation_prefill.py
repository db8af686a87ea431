"""Generation speed: the transformers backend (each prompt prefilled once, its KV cache copied to its n
samples) against Hugging Face ``generate(num_return_sequences=n)`` (which prefills the prompt n times),
on real BFCL prompts with the default model. Prints tokens/s of each and their ratio.

    .venv/bin/python benchmarks/generation_prefill.py [--prompts 2] [--n 4] [--max-new-tokens 32]
"""

from __future__ import annotations

import argparse
import time

import torch

from itool.components import GenerationRequest
from itool.registry import Registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()

    registry = Registry()
    loader, backend_factory = registry.get("model", "transformers"), registry.get("backend", "transformers")
    dataset, fmt = registry.get("dataset", "bfcl"), registry.get("format", "python")
    policy = loader.obj("smollm2-135m-instruct", loader.parse_options({}), device="auto", dtype="auto")
    backend = backend_factory.obj(policy, backend_factory.parse_options({"batch_size": args.n}))
    render = fmt.obj(fmt.parse_options({}))
    samples = [s for s in dataset.obj("test", dataset.parse_options({})) if s.category == "simple_python"]
    prompts = [render.render_prompt(s, policy.tokenizer) for s in samples[: args.prompts]]
    prompt_tokens = [len(policy.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    print(f"device {policy.device}, dtype {policy.dtype}, {len(prompts)} prompts of {prompt_tokens} tokens, "
          f"n={args.n}, max_new_tokens={args.max_new_tokens}, {torch.get_num_threads()} threads")

    # One untimed call first: the first forward pass of a process pays one-off allocation costs.
    backend.generate([GenerationRequest(prompts[0], n=args.n, max_new_tokens=2, temperature=1.0)])
    torch.manual_seed(0)
    started, produced = time.perf_counter(), 0
    for prompt in prompts:
        out = backend.generate([GenerationRequest(prompt, n=args.n, max_new_tokens=args.max_new_tokens, temperature=1.0)])
        produced += sum(len(g.token_logprobs) for g in out[0])
    ours = produced / (time.perf_counter() - started)

    torch.manual_seed(0)
    started, produced = time.perf_counter(), 0
    for prompt in prompts:
        ids = policy.tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(policy.device)
        with torch.inference_mode():
            out = policy.model.generate(**ids, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                        num_return_sequences=args.n, max_new_tokens=args.max_new_tokens,
                                        output_scores=True, return_dict_in_generate=True,
                                        pad_token_id=policy.tokenizer.pad_token_id)
        new = out.sequences[:, ids["input_ids"].shape[1]:]
        produced += int((new != policy.tokenizer.pad_token_id).sum())
    baseline = produced / (time.perf_counter() - started)

    print(f"HF generate (prefill per sample): {baseline:7.1f} tok/s")
    print(f"itool backend (shared prefill):   {ours:7.1f} tok/s")
    print(f"ratio: {ours / baseline:.2f}x")


if __name__ == "__main__":
    main()
