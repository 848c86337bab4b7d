# fencelock server image: a release build on Debian, run as an unprivileged user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The manifest names the benchmark, so its file must exist; it is not built here.
COPY benches ./benches
RUN cargo build --release --locked --bin fencelock

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 fencelock
COPY --from=build /src/target/release/fencelock /usr/local/bin/fencelock
USER fencelock
# Every interface of the container (its loopback is unreachable from the host): the
# choice of who reaches it is the port publishing's (`-p 127.0.0.1:12345:12345`).
ENV FENCELOCK_LISTEN=0.0.0.0:12345
EXPOSE 12345
ENTRYPOINT ["fencelock"]
CMD ["serve"]
