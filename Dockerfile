# syntax=docker/dockerfile:1
# evorec's HTTP service (`evorec serve`) as a container. Guide: docs/deploy.md.
#
# Built and run by `make image-test` (deploy/image/image_test.py, with Podman): it serves a real run,
# answers /healthz and /readyz, takes events, recommends, forgets a user, runs as uid 10001 on a
# read-only root file system, holds no secret in any layer, and refuses to start without a key.
# tests/serving/test_deploy.py also checks this file statically.
#
#   docker build -t evorec .
#   docker run -p 8000:8000 -v "$PWD/runs/sasrec:/models/run:ro" -v evorec-data:/data \
#              -v "$PWD/secret.key:/run/secrets/evorec_secret:ro" evorec
#
# Nothing secret is baked in: the pseudonymisation key comes at run time from EVOREC_SECRET or the
# file EVOREC_SECRET_FILE points to (default below: a mounted /run/secrets/evorec_secret).
#
# BASE: any Debian-based image with Python 3.11 and its venv module (make image-test builds one with
# mmdebstrap where no registry is reachable). Both stages start from it, so the virtual environment
# copied from the first finds the same interpreter in the second.
ARG BASE=python:3.11-slim

# -- stage 1: the virtual environment (pip, its configuration and any cache stay in this stage) --
FROM ${BASE} AS build

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# docker/pip/: an optional pip.conf for the build (where pip finds packages; README there). Empty by
# default; make image-test copies the host's pip configuration into it.
COPY docker/pip/ /etc/evorec-build/pip/
RUN python3 -m venv /opt/evorec

# torch first, pinned, from the CPU index: the project asks only for torch>=2.2, and an unpinned
# torch from PyPI is a CUDA build (GBs of libraries a CPU service never uses). Same pin as the
# Makefile. TORCH may instead name a CPU wheel file (make image-test mounts one; TORCH_INDEX= empty).
ARG TORCH=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN if [ -f /etc/evorec-build/pip/pip.conf ]; then export PIP_CONFIG_FILE=/etc/evorec-build/pip/pip.conf; fi \
    && /opt/evorec/bin/pip install --no-compile ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "$TORCH"

# Then the project with what the service adds to the core (the `serve` extra: the PostgreSQL driver
# and ONNX Runtime for a model written by `evorec export`); the torch above already satisfies the
# project's requirement, so pip keeps it (checked after).
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN if [ -f /etc/evorec-build/pip/pip.conf ]; then export PIP_CONFIG_FILE=/etc/evorec-build/pip/pip.conf; fi \
    && /opt/evorec/bin/pip install --no-compile '.[serve]' \
    && /opt/evorec/bin/python -c "import torch; assert torch.__version__.startswith('2.13.0') and not torch.version.cuda, torch.__version__"
# Size (docs/deploy.md, "Building and testing the image"): no TensorBoard (the `tensorboard` extra, not in
# `serve`; the trainer runs without it, with a warning), no pip or protoc, no test suites or C++ test binaries, no JupyterLab
# extension, no C/C++ headers, sources or static libraries,
# no Arrow Flight / S3 (pyarrow then behaves as a build without them), and bytecode only
# for what `evorec serve` imports (compiled here by importing it: the root file system is read-only at
# run time, so Python could not cache it there).
RUN /opt/evorec/bin/pip uninstall --yes pip \
    && cd "$(/opt/evorec/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    && find . -depth -type d \( -name tests -o -name include \) -exec rm -rf {} + \
    && find . -type f \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pyi' -o -name '*.h' -o -name '*.hpp' -o -name '*.c' -o -name '*.cpp' -o -name '*.a' \) -delete \
    && rm -rf torch/share/cmake torch/test torch/bin/test_* torch/bin/*Test torch/bin/protoc* \
              torch/lib/*_test.so plotly/labextension /opt/evorec/share/jupyter \
    && rm -f pyarrow/libarrow_flight.so* pyarrow/_flight*.so pyarrow/libarrow_python_flight.so* pyarrow/libarrow_s3.so* pyarrow/_s3fs*.so \
    && env -u PYTHONDONTWRITEBYTECODE /opt/evorec/bin/python -c "import evorec.cli.main, evorec.cli.serve, evorec.serving.app, evorec.serving.export, evorec.models.registry, evorec.models.checkpoint, sqlalchemy.dialects.sqlite, sqlalchemy.dialects.postgresql.psycopg, uvicorn.main, uvicorn.loops.auto, uvicorn.protocols.http.auto, uvicorn.lifespan.on, onnxruntime, faiss, prometheus_client, pyarrow.parquet, pyarrow.dataset, pyarrow.fs, duckdb, lightgbm" \
    && env -u PYTHONDONTWRITEBYTECODE /opt/evorec/bin/evorec serve --help > /dev/null

# -- stage 2: the service: the base, OpenMP, a user, the environment; no compiler, pip or tests --
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/evorec/bin:$PATH

# LightGBM (the interest forecaster's ranker) loads the system's OpenMP runtime; slim images lack it.
# A non-root user with a fixed uid (a key file mounted for it must be owned by 10001, mode 0600).
# /data holds the SQLite event store when no PostgreSQL is configured.
RUN if ! ls /usr/lib/*-linux-gnu/libgomp.so.1 > /dev/null 2>&1; then \
        apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*; \
    fi \
    && groupadd --system --gid 10001 evorec \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/evorec evorec \
    && mkdir -p /data /models \
    && chown evorec:evorec /data

COPY --from=build /opt/evorec /opt/evorec

USER 10001:10001
WORKDIR /home/evorec

# The model run (its best.pt, or a file written by `evorec export`) is mounted at /models/run;
# point EVOREC_SERVE_RUN elsewhere to serve another path. The SQLite default lives on the /data
# volume; set EVOREC_SERVE_DB_URL=postgresql+psycopg://... for PostgreSQL (needed for >1 replica).
# /run/secrets does not exist in the image and the user cannot create it, so a container started
# with neither EVOREC_SECRET nor a mounted key file fails at start instead of inventing a key.
ENV EVOREC_SERVE_RUN=/models/run \
    EVOREC_SERVE_DB_URL=sqlite:////data/evorec-serve.db \
    EVOREC_SERVE_TORCH_THREADS=1 \
    EVOREC_SECRET_FILE=/run/secrets/evorec_secret \
    OMP_NUM_THREADS=1
VOLUME ["/data"]

EXPOSE 8000

# No curl in the slim image: the check is Python's urllib (URLError / a non-200 -> exit 1).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["evorec"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
