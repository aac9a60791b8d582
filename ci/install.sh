#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh machine of this project's kind.
set -euo pipefail
cd "$(dirname "$0")/.."
# torch is pinned: an open range would pull a multi-GB CUDA build; 2.13.0 (CPU) is on local disk.
python3 -m pip install --quiet --disable-pip-version-check "torch==2.13.0" -e ".[test]"
# etcd (3.4 in Debian 12) for the etcd rendezvous backend's tests; apt does not start it.
if ! command -v etcd >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends etcd-server etcd-client
fi
