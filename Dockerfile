# syntax=docker/dockerfile:1
# Image of the enrichment worker. The entrypoint is `enricher` and the default
# arguments `run --config /etc/enricher/enricher.toml`, so any subcommand works:
#
#   docker build -t enricher:dev --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) .
#   docker run --rm -v "$PWD/enricher.toml:/etc/enricher/enricher.toml:ro" -p 9102:9102 enricher:dev
#   docker run --rm enricher:dev --help
#   docker run --rm -v "$PWD/c.toml:/c.toml:ro" enricher:dev check-config /c.toml
#
# The load test has its own target, not in the production image:
#   docker build -t enricher-loadtest:dev --target loadtest .
#   kubectl run lt --rm -it --image enricher-loadtest:dev -- \
#     replay /logs --brokers kafka:9092 --group enricher-bro_conn
#
# Stage 1 builds the dependencies once against dummy sources (cached as long as
# Cargo.toml/Cargo.lock and the crate manifests do not change), then the real
# release binary. Stage 2 carries only the binary and the shared libraries it
# links (libssl3, ca-certificates for TLS to Kafka/Redis).

# The workspace's rust-version (Cargo.toml): the oldest toolchain it builds
# with, checked by scripts/chart-test.sh.
ARG RUST_VERSION=1.88
ARG DEBIAN_RELEASE=bookworm
# Recorded in enricher_build_info and in the image's OCI labels.
ARG VERSION=0.1.0
ARG REVISION=unknown

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /src

# rdkafka (ssl, zstd) builds librdkafka from source: it needs a C toolchain,
# make, perl, pkg-config and the OpenSSL headers, all in rust:*-bookworm; cmake
# is not needed. Nothing else is installed here.

# --- dependency layer: manifests plus empty targets --------------------------
COPY Cargo.toml Cargo.lock ./
COPY acker/Cargo.toml acker/Cargo.toml
COPY enricher/Cargo.toml enricher/Cargo.toml
COPY tests/support/Cargo.toml tests/support/Cargo.toml
COPY loadtest/Cargo.toml loadtest/Cargo.toml
RUN mkdir -p acker/src enricher/src enricher/benches tests/support/src loadtest/src \
 && echo 'fn main() {}' > enricher/src/main.rs \
 && echo 'fn main() {}' > loadtest/src/main.rs \
 && touch enricher/src/lib.rs acker/src/lib.rs tests/support/src/lib.rs loadtest/src/lib.rs \
 && echo 'fn main() {}' > enricher/benches/enrich.rs \
 && cargo build --release --locked -p enricher -p loadtest --bins \
 && rm -rf acker/src enricher/src enricher/benches tests/support/src loadtest/src \
           target/release/enricher target/release/loadtest \
           target/release/deps/enricher-* target/release/deps/libenricher-* \
           target/release/deps/loadtest-* target/release/deps/libloadtest-* \
           target/release/deps/acker-* target/release/deps/libacker-* \
           target/release/deps/test_support-* target/release/deps/libtest_support-* \
           target/release/.fingerprint/enricher-* target/release/.fingerprint/loadtest-* \
           target/release/.fingerprint/acker-* target/release/.fingerprint/test-support-*

# --- the real build -----------------------------------------------------------
COPY acker acker
COPY enricher enricher
COPY tests/support tests/support
COPY loadtest loadtest
ARG REVISION
RUN ENRICHER_REVISION="${REVISION}" cargo build --release --locked -p enricher -p loadtest --bins \
 && install -D -m 0755 target/release/enricher /out/enricher \
 && install -D -m 0755 target/release/loadtest /out/loadtest

# --- base of both images: the TLS runtime and a non-root user ---------------
FROM debian:${DEBIAN_RELEASE}-slim AS base

# Only the TLS runtime and CA bundle. Versions are left to the bookworm
# security archive on purpose so that a rebuild picks up OpenSSL fixes.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/*

# Numeric, non-root user so that Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 enricher \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin enricher \
 && mkdir -p /etc/enricher /geoip \
 && chown 10001:10001 /geoip

ARG VERSION
ARG REVISION
LABEL org.opencontainers.image.source="https://example.invalid/enrichment-fleet" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"

USER 10001:10001
ENV ENRICHER_LOG=info \
    ENRICHER_LOG_FORMAT=json

# --- the load test: `docker build --target loadtest` --------------------------
FROM base AS loadtest
LABEL org.opencontainers.image.title="enricher-loadtest"
COPY --from=builder /out/enricher /usr/local/bin/enricher
COPY --from=builder /out/loadtest /usr/local/bin/loadtest
ENTRYPOINT ["/usr/local/bin/loadtest"]
CMD ["--help"]

# --- the worker (the default target) -------------------------------------------
FROM base AS runtime
LABEL org.opencontainers.image.title="enricher"
COPY --from=builder /out/enricher /usr/local/bin/enricher
EXPOSE 9102
ENTRYPOINT ["/usr/local/bin/enricher"]
CMD ["run", "--config", "/etc/enricher/enricher.toml"]
