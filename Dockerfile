# syntax=docker/dockerfile:1
# The derbridge image: one image for every process kind (`serve assethub|derms|bridge`, `db upgrade`, `smoke`),
# chosen by the command. See docs/operations.md. Build from the repository root:
#   docker build -t derbridge:0.1.0 .
# Two stages: the builder installs exactly what uv.lock says (no dev extra) into a virtual environment with
# the pinned uv of tools/uv-requirements.txt; the runtime stage copies only that environment onto the same
# Python image, runs as an unprivileged user, and has no compiler, uv or pip cache.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/derbridge
WORKDIR /build
# The same uv as the Makefile's, checked against its hashes.
COPY tools/uv-requirements.txt tools/
RUN python -m pip install --no-cache-dir --no-input --only-binary :all: --require-hashes -r tools/uv-requirements.txt
# The locked dependencies first, in a layer of their own: a change of the source does not reinstall them.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project --no-cache
# Then derbridge itself, installed (not editable) so that the environment stands without /build.
COPY README.md LICENSE ./
COPY src ./src
RUN uv sync --frozen --no-dev --no-editable --no-cache

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="derbridge" \
      org.opencontainers.image.description="Asset Hub, the DERMS, the OpenADR 3.1 edge and the bridge" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed uid/gid, so volumes (the claim-check file store) can be prepared for it outside the container.
RUN groupadd --system --gid 10001 derbridge \
    && useradd --system --uid 10001 --gid derbridge --home-dir /var/lib/derbridge --shell /usr/sbin/nologin derbridge \
    && mkdir -p /var/lib/derbridge/files \
    && chown -R derbridge:derbridge /var/lib/derbridge
COPY --from=builder /opt/derbridge /opt/derbridge
# Listen on every interface inside the container (the default, loopback, is for a laptop); logs as JSON
# lines; the data dir (files, and the embedded mode's SQLite) where the user may write.
ENV PATH=/opt/derbridge/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DERBRIDGE_DATA_DIR=/var/lib/derbridge \
    DERBRIDGE_SERVER__HOST=0.0.0.0 \
    DERBRIDGE_SERVER__PORT=8080 \
    DERBRIDGE_LOG_JSON=true
USER 10001:10001
WORKDIR /var/lib/derbridge
EXPOSE 8080
# Liveness of the HTTP process. The slim image has no curl: Python's own urllib asks /healthz. (A one-shot
# `db upgrade` container has nothing to answer; the compose file turns the check off for it.)
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('DERBRIDGE_SERVER__PORT', '8080') + '/healthz', timeout=4)"]
ENTRYPOINT ["derbridge"]
CMD ["--help"]
