#!/usr/bin/env bash
# Installs tansu, the independent Kafka-compatible broker the tests and
# `loadtest bench --broker tansu` run against, when it is missing, and prints
# the path of its binary. Building it takes about 17 minutes on 2 cores, once
# per machine: the binary is kept in $TANSU_ROOT (default ~/.cache/enricher-tools)
# and its build directory is removed afterwards.
#
#   scripts/tansu.sh           install if missing, print the binary's path
#   TANSU_BIN=/path/to/tansu   use that binary instead (nothing is installed)
set -euo pipefail

version=0.6.0
if [ -n "${TANSU_BIN:-}" ]; then
  echo "$TANSU_BIN"
  exit 0
fi
root=${TANSU_ROOT:-$HOME/.cache/enricher-tools}
bin=$root/bin/tansu
if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$version"; then
  echo "$bin"
  exit 0
fi

echo "scripts/tansu.sh: building tansu $version into $root (about 17 minutes on 2 cores, once)" >&2
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
# The SQLite storage engine (libsql): `memory://` skips records when a consumer
# resumes in the middle of a batch (../shared/LIBRARIES.md).
CARGO_TARGET_DIR=$build cargo install "tansu@$version" --locked --quiet \
  --features dynostore,libsql --root "$root" >&2
echo "$bin"
