# The cjkrag HTTP service. Dependencies come from pyproject.toml's extras only (no second list here); torch
# goes in first and pinned, as the Makefile does, from the CPU wheel index by default. For CUDA:
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .   (compose: cjkrag-gpu)
FROM python:3.11.13-slim-bookworm

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG EXTRAS=gpu,milvus,qdrant,weaviate,elasticsearch,service

# No secret here: TOKENIZERS_PARALLELISM (a switch of the tokenizers library) only looks like one to DL3064.
# hadolint ignore=DL3064
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    TOKENIZERS_PARALLELISM=false \
    HF_HUB_OFFLINE=1 \
    CJKRAG_CACHE_DIR=/opt/cjkrag/cache \
    CJKRAG_DATA_DIR=/data

WORKDIR /app
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

COPY . /app
# The bundled model is converted at build time, so the container needs no network at start.
RUN pip install --no-cache-dir "/app[${EXTRAS}]" \
    && cjkrag models prepare \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin cjkrag \
    && mkdir -p /data \
    && chown cjkrag /data

USER 10001
EXPOSE 8000
CMD ["cjkrag", "serve", "--config", "/app/configs/compose-milvus.yaml", "--host", "0.0.0.0", "--port", "8000"]
