"""The default run with and without the opt-in CPU kernels (packages/itool-cpu-kernels), back to back.

Each repeat runs ``itool run --search puct --loss simpo`` (the README's main command, on the built-in
defaults) once with the kernels loaded from source (``ITOOL_PLUGINS=itool_cpu_kernels``) and once without,
alternating, in fresh run folders, with the evaluation cache off (so both evaluate the Base model), in the
dtype given. Prints each run's wall time and per-stage seconds, the with/without ratio, and whether the
two runs' evaluation summaries are identical.

    .venv/bin/python benchmarks/cpu_kernels_ab.py --dtype float32
    .venv/bin/python benchmarks/cpu_kernels_ab.py --dtype bfloat16 -- --eval-limit 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "packages" / "itool-cpu-kernels"


def run(name: str, runs_dir: Path, dtype: str, kernels: bool, extra: list[str]) -> tuple[float, dict, dict]:
    env = {**os.environ, "ITOOL_EVAL_CACHE": "off"}
    if kernels:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(KERNELS), env.get("PYTHONPATH")]))
        env["ITOOL_PLUGINS"] = ",".join(filter(None, ["itool_cpu_kernels", env.get("ITOOL_PLUGINS")]))
    command = [sys.executable, "-m", "itool", "run", "--search", "puct", "--loss", "simpo", "--dtype", dtype,
               "--runs-dir", str(runs_dir), "--name", name, *extra]
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    rows = [json.loads(line) for line in (runs_dir / name / "metrics.jsonl").read_text().splitlines()]
    stages = {r["stage"]: r["seconds"] for r in rows if r["event"] == "end"}
    summaries = {r["stage"]: r["summary"] for r in rows if r["event"] == "end" and "summary" in r}
    return seconds, stages, summaries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("extra", nargs="*", help="further `itool run` options, after --")
    args = parser.parse_args()

    runs_dir = Path(tempfile.mkdtemp(prefix="kernels-ab-"))
    times: dict[bool, list[float]] = {True: [], False: []}
    summaries: dict[bool, dict] = {}
    for repeat in range(args.repeats):
        for kernels in (True, False):
            name = f"{'with' if kernels else 'without'}-{repeat}"
            seconds, stages, summaries[kernels] = run(name, runs_dir, args.dtype, kernels, args.extra)
            times[kernels].append(seconds)
            print(f"{name:10} {seconds:7.1f} s  " + "  ".join(f"{s} {v:.0f}" for s, v in stages.items()), flush=True)
    best = {k: min(v) for k, v in times.items()}
    print(f"{args.dtype}: best with kernels {best[True]:.1f} s, without {best[False]:.1f} s, "
          f"without/with {best[False] / best[True]:.3f}")
    print("evaluation summaries identical:", summaries[True] == summaries[False])


if __name__ == "__main__":
    main()
