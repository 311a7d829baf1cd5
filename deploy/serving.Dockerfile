# The serving plane's image (deploy/k8s/serving.yaml): `python -m serving` in a venv of
# requirements.txt with the project and its serving extra installed under those pins, no Beam
# runner jars, no test tools. The build context is the repo root (.dockerignore there):
#   docker build -t streamml-serving:latest -f deploy/serving.Dockerfile .
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin streamml \
    && install -d -o 10001 -g 10001 /app
WORKDIR /app
COPY --chown=10001:10001 . /app
USER 10001
RUN python3.11 -m venv /app/.venv \
    && /app/.venv/bin/pip install --no-cache-dir -r requirements.txt \
    && /app/.venv/bin/pip install --no-cache-dir ".[serving]" -c requirements.txt
EXPOSE 8000
ENTRYPOINT ["/app/.venv/bin/python", "-m", "serving"]
