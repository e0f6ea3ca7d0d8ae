#!/usr/bin/env bash
# The fast path's equality tests (tests/test_fastpath.py) against one langchain-core release,
# default the newest on PyPI, with the fast path forced on (AGENCY_FASTPATH=force).
# That release is laid over .venv's site-packages (pip --target, no deps), so nothing else moves.
# Passing on a minor version not yet in agency._fastpath.VERIFIED_LANGCHAIN_CORE says: add it.
# Failing on a listed version is a real break (exit 1); failing on an unlisted one only warns,
# because the version gate already keeps users of that release on the full path.
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:-}"
if [[ -z "$version" ]]; then
    version=$(.venv/bin/pip index versions langchain-core 2>/dev/null \
        | sed -n 's/^langchain-core (\(.*\))$/\1/p')
fi
if [[ -z "$version" ]]; then
    echo "fastpath: could not ask PyPI for the newest langchain-core; skipped" >&2
    exit 0
fi
overlay=$(mktemp -d)
trap 'rm -rf "$overlay"' EXIT
.venv/bin/pip install -q --no-deps --target "$overlay" "langchain-core==$version" 2>/dev/null
minor=$(echo "$version" | cut -d. -f1,2)
listed=$(PYTHONPATH="$overlay" AGENCY_FASTPATH= .venv/bin/python -c \
    "from agency import _fastpath; print(_fastpath.enabled('$version'))")
got=$(PYTHONPATH="$overlay" .venv/bin/python -c "import langchain_core; print(langchain_core.__version__)")
echo "fastpath: equality tests against langchain-core $got (verified list has $minor: $listed)"
if PYTHONPATH="$overlay" AGENCY_FASTPATH=force .venv/bin/pytest -q -p no:cacheprovider \
        -p no:randomly tests/test_fastpath.py; then
    [[ "$listed" == "True" ]] || echo "fastpath: $version passes: add \"$minor\" to VERIFIED_LANGCHAIN_CORE"
    exit 0
fi
if [[ "$listed" == "True" ]]; then
    echo "fastpath: FAILED on verified langchain-core $version: take $minor off the list" >&2
    exit 1
fi
echo "fastpath: WARNING: fails on langchain-core $version (not verified: the full path runs there)" >&2
