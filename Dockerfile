# One image, every process type: `scaleout serve` (default), `scaleout worker`, `scaleout migrate`.
# Runs on any container platform: configuration comes from the environment only. Runs as the
# numeric user 10001 (so Kubernetes' runAsNonRoot can verify it) on a read-only root
# filesystem: the process writes nothing to disk.

# cargo-chef: the dependencies are compiled in a layer of their own, keyed by a recipe made
# from Cargo.toml and Cargo.lock only, so a source edit rebuilds only the crate itself.
FROM rust:1.95-bookworm AS chef
RUN cargo install cargo-chef --version 0.1.78 --locked
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --bin scaleout --recipe-path recipe.json
COPY . .
# The SQL macros check queries against .sqlx/ (committed), not a live database.
ENV SQLX_OFFLINE=true
RUN cargo build --release --locked --bin scaleout

# Nothing installed at run time: no package manager step, no curl. The CA bundle (TLS to
# managed Postgres, Redis, S3, SMTP) comes from the build image's ca-certificates.
FROM debian:bookworm-slim
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /src/target/release/scaleout /usr/local/bin/scaleout
USER 10001:10001
ENV SCALEOUT_HTTP_ADDR=0.0.0.0:8080 \
    SCALEOUT_METRICS_ADDR=0.0.0.0:9180 \
    LOG_FORMAT=json
EXPOSE 8080 9180
# Liveness only: `scaleout healthcheck` asks the process' own /health on the metrics port
# (SCALEOUT_METRICS_ADDR) within 2 s; no I/O behind it, so a database outage never gets
# healthy containers restarted.
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 CMD ["scaleout", "healthcheck"]
ENTRYPOINT ["scaleout"]
CMD ["serve"]
