# syntax=docker/dockerfile:1
# evorec's HTTP service (`evorec serve`) as a container. Guide: docs/deploy.md.
#
# NOT BUILT HERE: the machine this was written on has no Docker engine. What can be checked without
# one is checked by tests/serving/test_deploy.py: torch is pinned and installed before the project,
# the ENTRYPOINT + CMD are a valid `evorec serve` command line (it is started, with the ENV below,
# against a real run), every EVOREC_* variable named here exists, the HEALTHCHECK command exits 0
# against a live server and non-zero when it is down, and .dockerignore keeps .venv and data out.
#
#   docker build -t evorec .
#   docker run -p 8000:8000 -v "$PWD/runs/sasrec:/models/run:ro" -v evorec-data:/data \
#              -v "$PWD/secret.key:/run/secrets/evorec_secret:ro" evorec
#
# Nothing secret is baked in: the pseudonymisation key comes at run time from EVOREC_SECRET or the
# file EVOREC_SECRET_FILE points to (default below: a mounted /run/secrets/evorec_secret).

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, pinned, from the CPU index: the project asks only for torch>=2.2, and an unpinned
# torch from PyPI is a CUDA build (GBs of libraries a CPU service never uses). Same pin as the Makefile.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

# Then the project with the PostgreSQL event store and the exported-model runtimes (ONNX Runtime);
# the torch above already satisfies the project's requirement, so pip keeps it.
WORKDIR /opt/evorec
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install '.[postgres,export]' \
    && python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"

# A non-root user with a fixed uid (a key file mounted for it must be owned by 10001, mode 0600).
# /data holds the SQLite event store when no PostgreSQL is configured.
RUN groupadd --system --gid 10001 evorec \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/evorec evorec \
    && mkdir -p /data /models \
    && chown evorec:evorec /data
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
