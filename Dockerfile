# One image for every tiersweep role (scan, clean, status, inspect, recover, demo).
#
#   docker build -t tiersweep .
#   docker run --rm tiersweep --help
#
# Build stage: the dependency tree is compiled in its own layer (against a stub main), so
# editing tiersweep's sources rebuilds only tiersweep.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src workers/tiersweep \
 && echo 'fn main() {}' > workers/tiersweep/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin tiersweep \
 && rm -rf src workers
COPY src src
COPY workers workers
RUN touch src/lib.rs workers/tiersweep/main.rs \
 && cargo build --release --locked --bin tiersweep \
 && cp target/release/tiersweep /tiersweep

# Runtime: glibc + CA certificates, no shell, no package manager, uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /tiersweep /usr/local/bin/tiersweep
USER nonroot:nonroot
# Health, readiness and Prometheus metrics (worker.health_listen).
EXPOSE 8080
ENV TIERSWEEP_WORKER__HEALTH_LISTEN=0.0.0.0:8080
ENTRYPOINT ["/usr/local/bin/tiersweep"]
CMD ["--help"]
