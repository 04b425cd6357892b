# syntax=docker/dockerfile:1
# spiffe-sidecar container image: the sidecar (`run`), the embedded agent
# (`agent`) and the init-container job (`iptables install`) in one image.
#
#   docker build -t spiffe-sidecar:0.1.0 .
#   docker run --rm spiffe-sidecar:0.1.0 --version
#
# CI builds this file with podman from a Debian bookworm base it makes with
# debootstrap (BASE_IMAGE=localhost/...), then runs --version and this
# HEALTHCHECK in a real container: tools/container-check.

# Plain Debian, not python:*-slim: the interpreter, OpenSSL and iptables all
# come from Debian's archive, so a base made with debootstrap builds exactly
# this image with no registry pull.
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim

# --- build: compile proxy/_fastpath.pyx against OpenSSL into a venv ---------
FROM ${BASE_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3 python3-venv python3-dev gcc libc6-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY proxy ./proxy
# The package and every dependency into one venv; the runtime stage copies
# it whole and so carries no compiler, headers or pip cache.
# Behind a TLS-inspecting proxy, pass the CA bundle that trusts it as the
# optional secret `ca-bundle` (--secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt):
# pip uses it for this step only and it never enters a layer.
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
 && python3 -m venv /opt/spiffe-sidecar \
 && /opt/spiffe-sidecar/bin/pip install --no-cache-dir --disable-pip-version-check . \
 && cd / && /opt/spiffe-sidecar/bin/python -c "import proxy._fastpath"  # not /src/proxy

# --- runtime: Debian's Python + the OpenSSL the extension links against -----
FROM ${BASE_IMAGE} AS runtime
# python3: the venv's interpreter (same path as in the build stage).
# libssl3: the extension's OpenSSL. iptables: the init container
# (`spiffe-sidecar iptables install`) runs from this same image; both the
# nft and legacy back ends come with it, `--mode auto` picks the host's.
# iproute2: `--inbound-mode tproxy` adds an ip rule and a route.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libssl3 iptables iproute2 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/spiffe-sidecar /opt/spiffe-sidecar
ENV PATH=/opt/spiffe-sidecar/bin:$PATH
RUN spiffe-sidecar --version && python -c "import proxy._fastpath"
# A fixed uid: the iptables rules exempt this uid's connections from
# redirection (owner match), so the image and the init container's
# --proxy-uid must agree. 1337 is Istio's choice too.
RUN groupadd --system --gid 1337 spiffe-sidecar \
 && useradd --system --uid 1337 --gid 1337 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin spiffe-sidecar \
 && mkdir -p /etc/spiffe-sidecar
USER 1337:1337
# 15001 outbound transparent, 15006 inbound transparent, 15000 admin (loopback).
EXPOSE 15001 15006
# Healthy once the admin endpoint's /ready answers 200: a usable SVID is
# loaded, every listener is bound and the sidecar is not draining (503
# otherwise). No curl in the image: Python's urllib is already there.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:15000/ready', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["spiffe-sidecar"]
CMD ["run", "--config", "/etc/spiffe-sidecar/sidecar.yaml"]
