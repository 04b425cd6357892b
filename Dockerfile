# syntax=docker/dockerfile:1
# spiffe-sidecar container image: the sidecar (`run`), the embedded agent
# (`agent`) and the init-container job (`iptables install`) in one image.
#
#   docker build -t spiffe-sidecar:0.1.0 .
#   docker run --rm spiffe-sidecar:0.1.0 --help
#
# Not built on the machine where this file was written (no container engine
# there): tests/unit/interception/test_manifests.py checks it against the
# manifests and the sidecar config instead. See docs/transparent-mode.md.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: compile proxy/_fastpath.pyx against OpenSSL, wheel everything ---
FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY proxy ./proxy
# Wheels for the package and every dependency, so the runtime stage installs
# offline and carries no compiler.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- runtime: slim Python + the OpenSSL the extension links against ---------
FROM ${PYTHON_IMAGE} AS runtime
# libssl3: the extension's OpenSSL. iptables: the init container
# (`spiffe-sidecar iptables install`) runs from this same image; both the
# nft and legacy back ends come with it, `--mode auto` picks the host's.
# iproute2: `--inbound-mode tproxy` adds an ip rule and a route.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl3 iptables iproute2 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels spiffe-sidecar \
 && rm -rf /wheels \
 && python -c "import proxy._fastpath"
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
# The admin endpoint's readiness (/ready: 200 once the first SVID is loaded)
# arrives with the admin issue; until then this check fails and the
# container reports "unhealthy" while it serves. No curl in a slim image:
# Python's urllib is already there.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:15000/ready', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["spiffe-sidecar"]
CMD ["run", "--config", "/etc/spiffe-sidecar/sidecar.yaml"]
