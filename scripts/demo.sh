#!/usr/bin/env bash
# The main job on embedded defaults, on a fresh machine with nothing installed:
# builds the release binaries, then runs `loadtest demo`, which starts an
# embedded Kafka (librdkafka's mock cluster), writes demo GeoIP databases,
# starts a fake DNS server (20 ms median, 1% never answers), uses Redis when
# one answers on 127.0.0.1:6379, runs two enricher workers per topic, replays
# synthetic Zeek conn/dns/ssl logs through them, counts every record, and
# prints the report. Arguments go to the demo (`--help` lists them), e.g.
#   ./scripts/demo.sh --dir ../shared/data/zeek/json --plot demo.svg
# `./scripts/demo.sh --pipe [--out DIR]` shows `enricher pipe` on a fixed
# sample instead, and checks what comes out.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet -p loadtest -p enricher --bins
exec target/release/loadtest demo "$@"
