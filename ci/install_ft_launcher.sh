#!/usr/bin/env bash
# NVIDIA's ft_launcher (nvidia-resiliency-ext), the third launcher the catalog judges, in its
# own venv at .venv-ft: it shares the system's torch (--system-site-packages) but keeps its
# pynvml away from it (with pynvml installed, every `import torch` warns on stderr).
# 0.4.1 is the newest release this machine's package index offers for Python 3.11.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -x .venv-ft/bin/ft_launcher ]]; then
  exit 0
fi
python3 -m venv --system-site-packages .venv-ft
# psutil first, into the venv itself: the system's copy may come and go.
.venv-ft/bin/pip install --quiet --disable-pip-version-check --ignore-installed --no-deps "psutil>=6"
.venv-ft/bin/pip install --quiet --disable-pip-version-check "nvidia-resiliency-ext==0.4.1"
.venv-ft/bin/ft_launcher --help >/dev/null 2>&1 || {
  echo "ci/install_ft_launcher.sh: ft_launcher does not start; see .venv-ft/bin/ft_launcher --help" >&2
  exit 1
}
