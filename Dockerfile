# syntax=docker/dockerfile:1
#
# slogate: one image, two roles. `slogate controller ...` or `slogate webhook ...`; the Helm
# chart (charts/slogate) passes the role and its flags as arguments.
#
# No Docker engine runs on the project's own machines, so this file is checked by
# tests/unit/test_dockerfile.py (pinned base, stages, non-root user, entrypoint, what is
# copied) rather than built in `make test`. Build it where Docker or BuildKit runs:
#   docker build -t <registry>/slogate:0.1.0 .
#
# The base is pinned to a patch release; pin its digest too in your registry mirror
# (`docker buildx imagetools inspect python:3.11.14-slim-bookworm`) and let Renovate or
# Dependabot move both.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- build: install the package and its runtime dependencies into a virtualenv -----------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# Every runtime dependency (numpy, pydantic-core, cryptography) ships manylinux wheels for
# amd64 and arm64, so no compiler is installed even here.
RUN python -m venv --without-pip /opt/slogate
WORKDIR /src
# Only what the wheel needs: the project metadata (README.md is its long description) and the
# package itself; .dockerignore keeps everything else out of the build context.
COPY pyproject.toml README.md ./
COPY operator/ ./operator/
# Bytecode is compiled here, once: with a read-only root filesystem Python cannot cache it at
# run time. `slogate --version` fails the build if the entry point or an import is broken.
RUN python -m pip --python /opt/slogate/bin/python install --no-cache-dir . \
    && /opt/slogate/bin/python -m compileall -q /opt/slogate/lib \
    && /opt/slogate/bin/slogate --version

# --- runtime: the interpreter, the virtualenv, nothing else ------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="slogate" \
      org.opencontainers.image.description="SLOs as decisions: error budgets from Prometheus and an admission gate for rollouts" \
      org.opencontainers.image.source="https://github.com/slogate/slogate" \
      org.opencontainers.image.licenses="Apache-2.0"
# The base image's pip, setuptools and wheel are not needed to run slogate; removing them
# takes their CVEs out of the image.
RUN python -m pip uninstall -y --no-cache-dir pip setuptools wheel \
    && rm -rf /root/.cache /usr/local/lib/python3.11/ensurepip
COPY --from=build /opt/slogate /opt/slogate
# MALLOC_ARENA_MAX: glibc's per-thread arenas keep freed memory resident (docs/controller.md).
ENV PATH=/opt/slogate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2
# 65532 (the "nonroot" convention): numeric, so the kubelet can verify runAsNonRoot without
# an /etc/passwd entry. The chart runs the container with a read-only root filesystem.
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080 8081 8443
ENTRYPOINT ["slogate"]
CMD ["--help"]
