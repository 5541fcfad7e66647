# touchstream: one image for every role — the embedded service (`serve`), the Kafka
# workers (`worker`), the HTTP API over Kafka (`api`) and the tools (`simulate`,
# `replay`, ...). The role is the command: `docker run IMAGE worker`.
#
# The base is pinned to an exact Python release (build with
# `--build-arg PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:...` to pin a digest).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY streams ./streams
COPY service ./service
# Wheels of touchstream and every dependency, so the runtime stage needs no compiler.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
# A fixed numeric uid/gid, so Kubernetes can check runAsNonRoot and volumes can be
# owned by it (fsGroup 10001). /var/lib/touchstream holds all state.
RUN groupadd --gid 10001 touchstream \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/touchstream \
       --shell /usr/sbin/nologin touchstream \
    && install -d -o 10001 -g 10001 /var/lib/touchstream
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl \
    && rm -rf /wheels
COPY datasets /opt/touchstream/datasets

# Listen on every interface inside the container; state under the volume below.
# PYTHONDONTWRITEBYTECODE: the root filesystem may be read-only (the Helm chart's is).
ENV TOUCHSTREAM_HOST=0.0.0.0 \
    TOUCHSTREAM_PORT=8080 \
    TOUCHSTREAM_DATA_DIR=/var/lib/touchstream/data \
    TOUCHSTREAM_STATE_DIR=/var/lib/touchstream/worker \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
VOLUME ["/var/lib/touchstream"]
WORKDIR /var/lib/touchstream
USER 10001:10001

# 8080: the HTTP API (`serve`, `api`); 9464: a worker's /metrics (TOUCHSTREAM_METRICS_PORT).
EXPOSE 8080 9464
# Alive when the HTTP API answers /healthz. A worker serves no API: its containers
# set TOUCHSTREAM_HEALTH_URL to its metrics endpoint (deploy/compose/compose.yaml).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('TOUCHSTREAM_HEALTH_URL', 'http://127.0.0.1:8080/healthz'), timeout=4)"]

ENTRYPOINT ["touchstream"]
CMD ["serve"]
