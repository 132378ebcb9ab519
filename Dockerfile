# syntax=docker/dockerfile:1
# The hold worker as a container: `python -m worker start` (livekit-agents'
# production mode: JSON logs, drain on SIGTERM). Build:
#   docker build -t hold-worker .
# BASE_IMAGE: any Debian-based image with python3 (3.11+) and its venv module;
# tests/e2e/test_image.py builds one from Debian's packages on a machine with
# no registry. No secret is baked in: LIVEKIT_URL, LIVEKIT_API_KEY and
# LIVEKIT_API_SECRET come from the environment or from files in
# HOLD_SECRETS_DIR (a mounted secret) at run time.
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml requirements.lock ./
# The runtime dependencies named in pyproject.toml, at the versions the lock
# pins (the lock also pins test tools, which stay out of the image).
# pip_ca: an optional build secret with a CA bundle, for builds behind a
# TLS-inspecting proxy; it is used for this step only and not kept.
RUN --mount=type=secret,id=pip_ca,required=false \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > runtime.txt \
 && python3 -m venv /opt/hold \
 && /opt/hold/bin/pip install --no-compile -c requirements.lock -r runtime.txt \
 && /opt/hold/bin/pip uninstall -y pip setuptools

FROM ${BASE_IMAGE}
# uid/gid 10001 (deploy/k8s/hold-worker.yaml runs as the same)
RUN groupadd --system --gid 10001 hold \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/hold \
        --shell /usr/sbin/nologin hold
COPY --from=build /opt/hold /opt/hold
WORKDIR /app
COPY worker ./worker
COPY assets/*.flac ./assets/
ENV PATH=/opt/hold/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOLD_HTTP_HOST=0.0.0.0 \
    HOLD_HTTP_PORT=8081
USER 10001:10001
# 8081: health (GET / -> 200 "OK") and worker info (GET /worker).
EXPOSE 8081
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "worker.healthcheck"]
# SIGTERM: drain (no new calls; held calls go on until handed over or for
# HOLD_DRAIN_TIMEOUT_S), then exit. Give the container at least that long.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "worker"]
CMD ["start"]
