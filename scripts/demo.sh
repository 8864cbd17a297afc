#!/usr/bin/env bash
# The main job on embedded defaults: builds the release binaries, then runs the
# `demo` binary (tests/support/src/bin/demo.rs), which writes its own GeoIP
# databases and Zeek sample, starts a loopback DNS server and runs
# `enricher pipe` over the sample. Arguments go to the demo (`--dir DIR`).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet -p enricher -p test-support --bins
exec target/release/demo "$@"
