# Headway: build with the official Swift image, run on slim Debian as a non-root user.
#
#   docker build -t headway .
#   docker run --rm --network host headway --endpoints 127.0.0.2:8080,127.0.0.3:8080

FROM swift:6.3-bookworm AS build
# Foundation's system libraries, needed to link the executable.
RUN apt-get update && apt-get install -y --no-install-recommends libcurl4-openssl-dev libnghttp2-dev libxml2-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Package.resolved pins every dependency: the image builds from the versions the tests ran with.
COPY Package.swift Package.resolved ./
RUN swift package resolve --force-resolved-versions
COPY Sources ./Sources
# The same release build as `swift build -c release` anywhere: its speed settings live in Package.swift.
RUN swift build -c release --product headway --static-swift-stdlib \
    && cp "$(swift build -c release --show-bin-path)/headway" /headway

FROM debian:bookworm-slim
# With the Swift runtime linked statically the binary needs only glibc and libstdc++; curl serves the
# health probe against the admin endpoint (which stays on loopback).
RUN apt-get update && apt-get install -y --no-install-recommends libstdc++6 curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home headway
COPY --from=build /headway /usr/local/bin/headway
COPY config/headway.yaml /etc/headway/headway.yaml
USER 10001
EXPOSE 15001 9901
HEALTHCHECK --interval=5s --timeout=2s CMD curl -fsS http://127.0.0.1:9901/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/headway"]
CMD ["run", "--config", "/etc/headway/headway.yaml"]
