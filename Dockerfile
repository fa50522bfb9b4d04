# netprobe-exporter container image.
#
#   docker build -t netprobe-exporter .
#   docker run -p 9716:9716 -v $PWD/config.yml:/etc/netprobe-exporter/config.yml:ro \
#       --sysctl net.ipv4.ping_group_range="0 2147483647" netprobe-exporter
#
# Build arguments: BASE_IMAGE (any Debian/Ubuntu-like image with python3 >= 3.11 and venv),
# PIP_NO_INDEX / PIP_FIND_LINKS (pip reads them from the environment: build from local wheels,
# e.g. PIP_NO_INDEX=1 PIP_FIND_LINKS=/src/wheels with the wheels in ./wheels).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY . /src
RUN python3 -m venv /opt/netprobe-exporter \
 && /opt/netprobe-exporter/bin/pip install /src \
 && /opt/netprobe-exporter/bin/netprobe-exporter --version

FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="netprobe-exporter" \
      org.opencontainers.image.description="Prometheus exporter: continuous and blackbox-compatible network probing" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/netprobe-exporter /opt/netprobe-exporter
COPY deploy/container/config.yml /etc/netprobe-exporter/config.yml
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin netprobe
USER 10001
EXPOSE 9716
# ICMP without root: the exporter uses an unprivileged ICMP datagram socket when the
# net.ipv4.ping_group_range sysctl (per network namespace, so per container) covers its group,
# e.g. `docker run --sysctl net.ipv4.ping_group_range="0 2147483647"`; see deploy/README.md.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
  CMD ["/opt/netprobe-exporter/bin/python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:9716/-/healthy', timeout=4).status != 200)"]
ENTRYPOINT ["/opt/netprobe-exporter/bin/netprobe-exporter"]
CMD ["--config.file=/etc/netprobe-exporter/config.yml"]
