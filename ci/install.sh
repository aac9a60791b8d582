#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh machine of this project's kind.
set -euo pipefail
cd "$(dirname "$0")/.."
# torch is pinned: an open range would pull a multi-GB CUDA build; 2.13.0 (CPU) is on local disk.
python3 -m pip install --quiet --disable-pip-version-check "torch==2.13.0" -e ".[test]"
# etcd (3.4 in Debian 12) for the etcd rendezvous backend's tests; apt does not start it.
# iptables and iproute2 for the netns topology (partitions); tests needing them are marked root.
missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server etcd-client)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
