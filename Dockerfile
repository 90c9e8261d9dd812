# One image for the API (`promptrec serve`, the default), the prompt-search worker
# (`promptrec worker`) and migrations (`promptrec db upgrade`); docker-compose.yml runs all three.
#
#   docker build -t promptrec .                                   # CPU torch (default)
#   docker build -t promptrec-cuda \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04 \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
#
# A base image without Python (nvidia/cuda) gets the distribution's python3 (3.11 or newer).
ARG BASE_IMAGE=python:3.11-slim

# ---- builder: a virtual environment with torch, the dependencies and the package -------------
FROM ${BASE_IMAGE} AS builder
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN if ! command -v python3 >/dev/null 2>&1; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The code is built where the runtime stage runs it (see below).
WORKDIR /app

# torch first, pinned, from the index of the wanted build (CPU unless TORCH_INDEX_URL says
# otherwise); the constraint keeps every later install from replacing it.
RUN pip install --upgrade pip \
    && pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0 \
    && echo "torch==2.13.0" > /tmp/constraints.txt

# The dependencies in a layer of their own, so that a source change does not reinstall them.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -c /tmp/constraints.txt -r /tmp/requirements.txt

COPY models ./models
COPY core ./core
COPY service ./service
COPY worker ./worker
COPY cli ./cli
RUN pip install -c /tmp/constraints.txt --no-deps -e . \
    && python -c "import torch; assert torch.__version__.split('+')[0] == '2.13.0', torch.__version__"

# ---- runtime: the environment, the code, migrations and the shipped model; no build tools -----
FROM ${BASE_IMAGE} AS runtime
RUN if ! command -v python3 >/dev/null 2>&1; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && groupadd --system --gid 10001 promptrec \
    && useradd --system --uid 10001 --gid promptrec --create-home --home-dir /home/promptrec \
        --shell /usr/sbin/nologin promptrec

# The project is installed editable from /app, so `promptrec.core.db.migrate` is
# /app/core/db/migrate.py and finds alembic.ini two folders above it, next to migrations/.
# Relative defaults (artifacts/rlm-small, data/ml-100k, sqlite:///data/promptrec.db) resolve
# under /app.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
COPY alembic.ini ./
COPY migrations ./migrations
COPY models ./models
COPY core ./core
COPY service ./service
COPY worker ./worker
COPY cli ./cli
# The shipped model and prompt set; writable by the service user (a named volume mounted here
# starts as a copy of them).
COPY --chown=promptrec:promptrec artifacts ./artifacts
RUN mkdir -p /app/data && chown promptrec:promptrec /app/data

USER promptrec:promptrec
EXPOSE 8000
# The API's liveness (no curl in slim images). The worker and migrate services of
# docker-compose.yml turn this off; the API service checks /health/ready instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=4)"]
ENTRYPOINT ["promptrec"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
