#!/usr/bin/env bash
# A Python with LiteLLM's proxy, for benchmarks/gateway_bench.py (--litellm-python).
#   bash benchmarks/litellm_proxy_venv.sh [/tmp/litellm-venv]
# `pip install 'litellm[proxy]'` cannot be resolved from PyPI for litellm 1.110.2 (its
# litellm-proxy pin is not published), so the proxy's own imports are installed by name: the
# set `litellm --config` needs to start and serve, found by starting it until it did.
set -euo pipefail
venv="${1:-/tmp/litellm-venv}"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q "litellm==1.110.2"
"$venv/bin/pip" install -q fastapi starlette uvicorn uvloop httptools gunicorn backoff orjson \
    apscheduler pyjwt python-multipart cryptography pynacl websockets rq litellm-proxy-extras \
    fastapi-sso tomlkit semver expression backports-zstd "rich<14" inquirerpy mcp httpx2 \
    litellm-enterprise restrictedpython boto3 azure-identity azure-storage-blob polars soundfile \
    hiredis granian pyroscope-io
"$venv/bin/python" -c "import litellm.proxy.proxy_server" && echo "LiteLLM proxy ready: $venv"
