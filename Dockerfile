# syntax=docker/dockerfile:1
# The jibri-autoscaler controller. Build: docker build -t jibri-autoscaler .
# Run:   docker run -v $PWD/config:/etc/jibri-autoscaler:ro -e JIBRI_AUTOSCALER_TOKEN=... \
#            -p 8080:8080 jibri-autoscaler
ARG PYTHON_IMAGE=python:3.11-slim

# --- build: a wheel of this project and a virtualenv with it and its dependencies ------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY common ./common
COPY controller ./controller
COPY agent ./agent
RUN python -m venv /opt/jibri-autoscaler \
    && /opt/jibri-autoscaler/bin/pip install --upgrade pip \
    && /opt/jibri-autoscaler/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && /opt/jibri-autoscaler/bin/pip install /tmp/wheels/*.whl \
    && /opt/jibri-autoscaler/bin/pip uninstall --yes pip \
    && /opt/jibri-autoscaler/bin/python -m controller --help >/dev/null

# --- runtime: the interpreter, the virtualenv and nothing else --------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="jibri-autoscaler" \
      org.opencontainers.image.description="Keeps exactly enough idle Jibri recorders in an EC2 Auto Scaling Group." \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/jibri-autoscaler/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 autoscaler \
    && useradd --system --uid 10001 --gid autoscaler --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin autoscaler \
    && install -d -m 0755 -o root -g root /etc/jibri-autoscaler
COPY --from=build /opt/jibri-autoscaler /opt/jibri-autoscaler
# AWS's RSA certificates for instance identity documents (docs/identity.md).
COPY deploy/certs /opt/jibri-autoscaler/certs
USER 10001:10001
EXPOSE 8080
# The container is healthy while every pool reconciled recently (/healthz, docs/design.md).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "controller", "run"]
CMD ["--config", "/etc/jibri-autoscaler/desired-state.yaml", "--listen", "0.0.0.0:8080", "--identity-certs", "/opt/jibri-autoscaler/certs"]
