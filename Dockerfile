# One image for the API and the workers (the command differs). CPU torch; the GPU worker image
# swaps the torch wheel (see docker-compose.yml, profile "gpu").
FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /srv/zerodata
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
COPY pyproject.toml requirements.lock README.md ./
COPY app app
COPY worker worker
COPY kernels kernels
COPY migrations migrations
RUN pip install --no-cache-dir --index-url "$TORCH_INDEX" torch==2.13.0 \
 && pip install --no-cache-dir -c requirements.lock .
RUN useradd --create-home zerodata && mkdir -p /data && chown zerodata /data
USER zerodata
ENV ZERODATA_HOME=/data
EXPOSE 8000
CMD ["zerodata", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-worker", "--no-create-key"]
