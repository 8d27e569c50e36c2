# Build: the same command as the README's, in release mode.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin saga-orchestrator

# Run: a small image, a non-root user, SQLite under /app/data by default.
FROM debian:bookworm-slim
RUN useradd --system --create-home --home-dir /app saga && mkdir -p /app/data && chown saga /app/data
WORKDIR /app
COPY --from=build /src/target/release/saga-orchestrator /usr/local/bin/saga-orchestrator
COPY config.toml /app/config.toml
USER saga
# Listening beyond loopback needs [auth] tokens (mount a config.toml with [[auth.tokens]]) or,
# explicitly, SAGA__AUTH__ALLOW_ANONYMOUS=true: without either it refuses to start.
ENV SAGA__SERVER__BIND=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["saga-orchestrator"]
CMD ["serve"]
