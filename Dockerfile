# syntax=docker/dockerfile:1
# ma-idp container image.
#
#   docker build -t ma-idp .
#   docker run -p 8096:8096 -v ma-idp-data:/data -e MA_IDP_PUBLIC_URL=https://idp.example.org ma-idp
#
# With no MA_IDP_DATABASE_URL the server uses SQLite in /data; the master key is taken from
# MA_IDP_MASTER_KEY or created as /data/master.key on first start. Keep /data on a volume and
# back it up. docker-compose.yml runs this image with PostgreSQL and Caddy.

# ---- build ----------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
# aws-lc-sys (the crypto backend) builds C code; cmake and clang cover its build paths.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake clang \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p ma-idp --locked \
    && install -m 0755 target/release/ma-idp /usr/local/bin/ma-idp

# ---- run ------------------------------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates: outbound TLS (upstream sign-in providers); curl: the health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 ma-idp \
    && useradd --system --uid 10001 --gid ma-idp --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin ma-idp \
    && mkdir /data \
    && chown ma-idp:ma-idp /data \
    && chmod 0700 /data
COPY --from=builder /usr/local/bin/ma-idp /usr/local/bin/ma-idp
USER ma-idp:ma-idp
WORKDIR /data
ENV MA_IDP_LISTEN=0.0.0.0:8096 \
    MA_IDP_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8096
# /ready answers 200 once the database is reachable and migrations are current.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8096/ready"]
ENTRYPOINT ["ma-idp"]
CMD ["serve"]
