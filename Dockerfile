# talkline's container image: `make image` builds it, `make image-test` smoke-tests it.
# The base is a build argument so a machine without a registry can use one made locally
# (deploy/container/image.sh makes it with debootstrap when the registry is out of reach).
# Layers, from the least to the most often rebuilt: the dependencies (keyed on
# pyproject.toml alone), the converted Moonshine model (keyed on its converter), talkline's
# own wheel (a source edit rebuilds only this, in seconds).
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${BASE_IMAGE} AS deps
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ENV PATH=/opt/talkline/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/talkline
# The dependencies alone, read from pyproject.toml. An optional build secret `ca` holds extra
# certificate authorities pip must trust (a proxy's); it is mounted for this step only and
# never lands in a layer.
COPY pyproject.toml /src/pyproject.toml
RUN --mount=type=secret,id=ca,required=false \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
 && python3 -c "import tomllib; p = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; \
extras = p['optional-dependencies']; \
print('\n'.join(p['dependencies'] + extras['emulator'] + extras['cluster']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# Moonshine converted to int8 ONNX once, here, not at every container start.
FROM deps AS models
# The converter alone (its two modules, under their package names), not all of talkline.
COPY src/talkline/services/moonshine_convert.py src/talkline/services/moonshine_onnx.py \
     /tmp/convert/talkline/services/
RUN cd /tmp/convert && touch talkline/__init__.py && python3 -c "from pathlib import Path; \
import talkline.services.moonshine_convert as m; \
m.ensure_converted(m.bundled_source(), Path('/opt/talkline-models'))" \
 && chmod -R a+rX /opt/talkline-models

FROM deps AS wheel
RUN --mount=type=secret,id=ca,required=false \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
 && pip install hatchling
COPY README.md LICENSE /src/
COPY src /src/src
RUN pip wheel --no-deps --no-build-isolation -w /wheels /src

FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 --shell /usr/sbin/nologin talkline \
 && mkdir -p /data && chown talkline:talkline /data
COPY --from=deps /opt/talkline /opt/talkline
COPY --from=models /opt/talkline-models /opt/talkline-models
COPY --from=wheel /wheels /wheels
ENV PATH=/opt/talkline/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TALKLINE_HOST=0.0.0.0 \
    TALKLINE_PORT=5000 \
    TALKLINE_MODEL_CACHE_DIR=/opt/talkline-models \
    TALKLINE_DATA_DIR=/data
RUN pip install --no-deps --no-cache-dir --disable-pip-version-check /wheels/*.whl \
 && rm -rf /wheels
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
