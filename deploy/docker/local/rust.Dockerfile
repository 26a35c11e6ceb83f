# A Rust builder image for machines that cannot pull rust:<version>-slim-bookworm: Debian bookworm
# with Debian's own toolchain (rustc-web/cargo-web from bookworm-security) and what the services'
# build needs. `cargo xtask images` builds it from its local Debian base when the registry is not
# reachable and passes it to deploy/docker/Dockerfile as RUST_IMAGE. Laid out like the official
# image: CARGO_HOME=/usr/local/cargo, its bin/ on PATH.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends rustc-web cargo-web \
    build-essential cmake pkg-config libssl-dev zlib1g-dev ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ENV CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN cargo --version && rustc --version
