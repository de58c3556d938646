# layerchain: one image for every role (validator, miner, driver, testnet init).
#   docker build -t layerchain .
#   docker run --rm layerchain --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    OPENBLAS_NUM_THREADS=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY layerchain ./layerchain
COPY ledger ./ledger
COPY api ./api
COPY miner ./miner
COPY driver ./driver
COPY rawhttp ./rawhttp
RUN pip install . \
    && useradd --create-home --uid 1000 layerchain \
    && mkdir -p /testnet \
    && chown layerchain /testnet

USER layerchain
ENTRYPOINT ["layerchain"]
CMD ["--help"]
