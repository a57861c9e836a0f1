# One image for every tiersweep worker role (scan, clean, status, inspect, recover).
#
#   docker build -t tiersweep .
#   docker run --rm tiersweep --help
#
# The release image builds the `tiersweep-workers` package without default features, so
# it carries no test machinery, demo or benchmark (infra/check-release.sh checks the same
# feature set in CI). `--build-arg FEATURES=dev` builds the image with `tiersweep demo` and
# `tiersweep bench`, which docker-compose.yml uses for its writer load.
#
# Build stage: the dependency tree is compiled in its own layer (against stub sources), so
# editing tiersweep's sources rebuilds only tiersweep.
FROM rust:1.95-slim-bookworm AS build
ARG FEATURES=""
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY workers/Cargo.toml workers/Cargo.toml
COPY bench/Cargo.toml bench/Cargo.toml
COPY testkit/Cargo.toml testkit/Cargo.toml
RUN mkdir -p src workers/tiersweep bench/src testkit/src \
 && echo 'fn main() {}' > workers/tiersweep/main.rs \
 && touch src/lib.rs bench/src/lib.rs testkit/src/lib.rs \
 && cargo build --release --locked -p tiersweep-workers --no-default-features --features "$FEATURES" \
 && rm -rf src workers/tiersweep bench/src testkit/src
COPY src src
COPY workers workers
COPY bench bench
COPY testkit testkit
RUN touch src/lib.rs workers/tiersweep/main.rs bench/src/lib.rs testkit/src/lib.rs \
 && cargo build --release --locked -p tiersweep-workers --no-default-features --features "$FEATURES" \
 && cp target/release/tiersweep /tiersweep

# Runtime: glibc + CA certificates, no shell, no package manager, uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /tiersweep /usr/local/bin/tiersweep
# Numeric, not `nonroot`: a pod with runAsNonRoot can only verify a numeric user, and
# refuses to start a container whose image names its user (CreateContainerConfigError).
USER 65532:65532
# Health, readiness and Prometheus metrics (worker.health_listen).
EXPOSE 8080
ENV TIERSWEEP_WORKER__HEALTH_LISTEN=0.0.0.0:8080
ENTRYPOINT ["/usr/local/bin/tiersweep"]
CMD ["--help"]
