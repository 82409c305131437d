# squeeze: multi-stage build. Stages 1-2 fetch the dashboard's chart libraries and build the
# release binary; stage 3 runs it on slim Debian
# as a non-root user with /data as its volume. The PostgreSQL server package is included so a
# single container can run with its private database (no DATABASE_URL); docker-compose.yml
# instead points every container at a shared PostgreSQL.
# No Docker engine runs on the development machines, so this file is kept consistent with the
# CLI by review, not by a build in CI.

# The dashboard's chart libraries come from the npm registry at build time, never a CDN.
FROM node:20-bookworm-slim AS dashboard
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund \
 && mkdir vendor \
 && cp node_modules/d3/dist/d3.min.js node_modules/@observablehq/plot/dist/plot.umd.min.js vendor/

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY static ./static
RUN cargo build --release --locked && strip target/release/squeeze

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl postgresql \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --home-dir /home/squeeze squeeze \
 && mkdir -p /data && chown squeeze:squeeze /data
COPY --from=build /src/target/release/squeeze /usr/local/bin/squeeze
COPY static /usr/share/squeeze/static
COPY --from=dashboard /src/vendor /usr/share/squeeze/static/vendor
ENV SQUEEZE_ADDR=0.0.0.0:8080 \
    SQUEEZE_DATA_DIR=/data \
    SQUEEZE_STATIC_DIR=/usr/share/squeeze/static \
    SQUEEZE_LOG_FORMAT=json
USER squeeze
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/readyz >/dev/null || exit 1
ENTRYPOINT ["squeeze"]
CMD ["serve"]
