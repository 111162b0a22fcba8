# syntax=docker/dockerfile:1
# One image for both services: `stockade brain ...` and `stockade agent ...`.
#   docker build -t ghcr.io/stockade/stockade:0.1.0 .
# (the name deploy/ uses; a mirror is an `images:` override in a kustomize overlay).
# The brain runs as the non-root user below; the agent's manifests run it as root with only
# NET_ADMIN and NET_RAW (deploy/agent.yaml), which nft/iptables need on the node.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Only what the wheel is made of: setup.py maps the service folders to packages.
COPY pyproject.toml setup.py ./
COPY services/ services/
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
# ghcr.io links a pushed image to its repository through image.source.
LABEL org.opencontainers.image.title="stockade" \
      org.opencontainers.image.description="Kubernetes NetworkPolicy enforcer: brain and node agent" \
      org.opencontainers.image.source="https://github.com/stockade/stockade" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The agent's dataplane tools. Versions follow the base image's Debian release, which is
# pinned by PYTHON_IMAGE; pinning each package too would break every point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends nftables iptables ipset conntrack \
    && rm -rf /var/lib/apt/lists/*
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/stockade-*.whl \
    && stockade --help >/dev/null
RUN groupadd --system --gid 10001 stockade \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin stockade
USER 10001:10001
EXPOSE 7443 9090 9091
ENTRYPOINT ["stockade"]
CMD ["brain"]
