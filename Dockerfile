# syntax=docker/dockerfile:1
# neuroon-gateway: a two-stage image. The builder installs the pinned dependencies into a venv;
# the runtime stage is slim, runs as a fixed non-root UID, and has no compiler and no pip cache.
# The base is pinned to a Python patch release. To pin the exact bytes too, pass its digest (from
# `docker buildx imagetools inspect python:3.11.14-slim-bookworm`, or your registry mirror's copy):
#   docker build --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest> .
# and let Renovate/Dependabot ("docker" manager) propose digest updates, so security fixes still arrive.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first, so a code change does not reinstall them: installing the project with a stub
# package pulls them in. The stub's build output goes too: setuptools reuses build/lib files that
# look newer than their source, and COPY keeps the real files' (older) times, so a leftover stub
# __init__.py would be installed in place of the real one (tests/test_dockerfile_build.py).
COPY constraints.txt pyproject.toml README.md ./
RUN mkdir app && touch app/__init__.py \
    && /opt/venv/bin/pip install -c constraints.txt . \
    && /opt/venv/bin/pip uninstall -y neuroon-gateway \
    && rm -rf app build ./*.egg-info
COPY app ./app
RUN /opt/venv/bin/pip install --no-deps -c constraints.txt .

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --no-create-home --shell /usr/sbin/nologin gateway
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATEWAY_LOG_FORMAT=json
WORKDIR /srv
USER 10001:10001
EXPOSE 8000
# SIGTERM (Docker's and Kubernetes' stop signal) makes uvicorn finish in-flight requests (up to
# 20 s) before the process exits with 0.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=2)"]
CMD ["neuroon-gateway", "serve", "--host", "0.0.0.0", "--port", "8000"]
