#!/usr/bin/env bash
# Set up (as scripts/setup.sh --dev), then lint, type-check and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
.venv/bin/ruff check agency memory agents tests benchmarks
.venv/bin/mypy agency  # agency/memory and agency/agents are links: one package tree
.venv/bin/lint-imports  # layers import downward only (the contract in pyproject.toml)
bash scripts/fastpath_newest.sh  # the fast path against the newest langchain-core release
.venv/bin/pytest "$@"  # not `python -m`: the repo root must not shadow the installed package
if [[ $# -eq 0 ]]; then
    # Async calls run on aiohttp (httpx-aiohttp) by default; the HTTP tests again on plain httpx.
    AGENCY_HTTP_TRANSPORT=httpx .venv/bin/pytest -q -m "not local" -p no:cacheprovider \
        tests/providers tests/resilience tests/test_http.py tests/test_app.py
fi
