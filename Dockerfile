# talkline's container image: `make image` builds it, `make image-test` smoke-tests it.
# The base is a build argument so a machine without a registry can use one made locally
# (deploy/container/image.sh makes it with debootstrap when the registry is out of reach).
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${BASE_IMAGE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ENV PATH=/opt/talkline/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/talkline
# The dependencies alone, read from pyproject.toml: editing the source does not reinstall
# them. An optional build secret `ca` holds extra certificate authorities pip must trust
# (a proxy's); it is mounted for this step only and never lands in a layer.
COPY pyproject.toml /src/pyproject.toml
RUN --mount=type=secret,id=ca,required=false \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
 && python3 -c "import tomllib; p = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; \
extras = p['optional-dependencies']; \
print('\n'.join(p['dependencies'] + extras['emulator'] + extras['cluster']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt hatchling \
 && rm /tmp/requirements.txt
COPY README.md LICENSE /src/
COPY src /src/src
RUN pip install --no-deps --no-build-isolation /src \
 && pip uninstall -y hatchling pathspec pluggy trove-classifiers \
 && find /opt/talkline -name '__pycache__' -prune -exec rm -rf {} +

FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 --shell /usr/sbin/nologin talkline
COPY --from=build /opt/talkline /opt/talkline
ENV PATH=/opt/talkline/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TALKLINE_HOST=0.0.0.0 \
    TALKLINE_PORT=5000 \
    TALKLINE_MODEL_CACHE_DIR=/opt/talkline-models \
    TALKLINE_DATA_DIR=/data
# Moonshine is converted to int8 ONNX here, once, not at every container start.
RUN python3 -c "from talkline.config import Settings; \
from talkline.services.moonshine_convert import ensure_converted; \
s = Settings(); ensure_converted(s.moonshine_model_path, s.model_cache_dir)" \
 && chmod -R a+rX /opt/talkline-models \
 && mkdir -p /data && chown talkline:talkline /data
# The session history (SQLite, unless TALKLINE_DATABASE_URL names a server) lives here.
VOLUME /data
USER talkline
WORKDIR /home/talkline
EXPOSE 5000
# /ready answers 503 while the models load and while draining: the orchestrator then
# sends no new users here. Give the container longer than TALKLINE_DRAIN_TIMEOUT (30 s)
# to stop: `docker stop -t 45`, compose's stop_grace_period.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python3", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:5000/ready', timeout=2)"]
STOPSIGNAL SIGTERM
CMD ["talkline", "serve"]
