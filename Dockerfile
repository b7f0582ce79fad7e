# One image, every process type: `scaleout serve` (default), `scaleout worker`, `scaleout migrate`.
# Runs on any container platform: configuration comes from the environment only.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, in their own layer: source edits then rebuild only the crate itself.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin scaleout || true
COPY . .
# The SQL macros check queries against .sqlx/ (committed), not a live database.
ENV SQLX_OFFLINE=true
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin scaleout

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home scaleout
COPY --from=build /src/target/release/scaleout /usr/local/bin/scaleout
USER scaleout
ENV SCALEOUT_HTTP_ADDR=0.0.0.0:8080 \
    SCALEOUT_METRICS_ADDR=0.0.0.0:9180 \
    LOG_FORMAT=json
EXPOSE 8080 9180
# Liveness only: no I/O, so a database outage never gets healthy containers restarted.
HEALTHCHECK --interval=5s --timeout=2s --retries=3 CMD curl -fsS http://127.0.0.1:9180/health || exit 1
ENTRYPOINT ["scaleout"]
CMD ["serve"]
