# syntax=docker/dockerfile:1
#
# genai-tap as a container: a static (musl, jemalloc) binary in a distroless image with CA
# certificates, no shell, running as a non-root user.
#
#   docker build -t genai-tap .                                    # this machine's architecture
#   docker buildx build --platform linux/amd64,linux/arm64 -t genai-tap .
#
# The binary is cross-built on the build machine (no emulation), by the same script CI runs.
# ARCH (x86_64 | aarch64) defaults to the platform being built; set it only together with a
# matching --platform.

ARG RUST_VERSION=1.95

FROM --platform=$BUILDPLATFORM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
ARG TARGETARCH
ARG ARCH=${TARGETARCH}
# Debian's toolchains for the C code (ring, jemalloc): musl-gcc natively; for aarch64 the
# cross compiler with musl's arm64 headers; make for jemalloc's build.
# hadolint ignore=DL3008
RUN dpkg --add-architecture arm64 \
    && apt-get update \
    && apt-get install -y --no-install-recommends make musl-tools gcc-aarch64-linux-gnu \
       libc6-dev-arm64-cross musl-dev:arm64 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    .ci/build-static "${ARCH}" /out/genai-tap

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="genai-tap" \
      org.opencontainers.image.description="Sidecar proxy that traces OpenAI-compatible traffic with OpenTelemetry GenAI conventions" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/genai-tap /usr/local/bin/genai-tap
# The proxy port stays on loopback (in a pod, only the app's containers reach it; on its own,
# run with -e GENAI_TAP_LISTEN=0.0.0.0:7420). The admin port (health, readiness, metrics; no
# secrets) listens on every interface so kubelet probes and scrapers reach it.
ENV GENAI_TAP_ADMIN__LISTEN=0.0.0.0:7421 \
    GENAI_TAP_LOG__FORMAT=json
EXPOSE 7420 7421
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/genai-tap"]
CMD ["run"]
