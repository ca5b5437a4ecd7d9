# syntax=docker/dockerfile:1
# cart-service: build with the official Rust image, run on debian-slim as a
# non-root user. The protos compile with protox (pure Rust): no protoc here.

FROM rust:1.92-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY migrations ./migrations
COPY src ./src
# Cache mounts keep the registry and compiled dependencies between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin cart-service \
    && cp target/release/cart-service /usr/local/bin/cart-service

FROM debian:bookworm-slim
# curl is only for the HEALTHCHECK; Debian's archive keeps one version per
# release, so pinning it would break the build at the next point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin cart
COPY --from=build /usr/local/bin/cart-service /usr/local/bin/cart-service
USER 10001:10001
ENV CART_LISTEN_ADDR=0.0.0.0:50051 \
    CART_METRICS_ADDR=0.0.0.0:9090 \
    CART_LOG_FORMAT=json
EXPOSE 50051 9090
# Liveness only: /readyz (503 while Postgres is away) is for load balancers,
# restarting the container would not bring Postgres back.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:9090/healthz"]
ENTRYPOINT ["/usr/local/bin/cart-service"]
