#!/usr/bin/env bash
# The test command of README.md: static checks, then test tiers, fastest first.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONDONTWRITEBYTECODE=1
echo "== static checks"
python3 -m ruff check launcher chaos tests bench examples
python3 -m ruff format --check launcher chaos
python3 -m mypy
python3 ci/check_imports.py
echo "== unit tests"
python3 -m pytest tests/unit -q -n 2 -p no:cacheprovider
echo "== integration tests"
python3 -m pytest tests/integration -q -n 2 -p no:cacheprovider -m "integration and not root and not docker and not gpu"
echo "== chaos scenarios (the resilience suite: the catalog on the local, netns and docker topologies)"
# A backend named here that cannot run fails the suite instead of skipping its scenarios.
export CHAOS_REQUIRE_BACKENDS="${CHAOS_REQUIRE_BACKENDS-local netns docker}"
python3 -m pytest tests/chaos -q -n 2 -p no:cacheprovider -m "chaos and not gpu"
