# The Beam worker pool beside every TaskManager (the beam-worker-pool sidecar of
# deploy/k8s/flink-session.yaml): Beam's Python SDK image at the Beam version of
# requirements-flink.txt (it must match the job server's), plus the project's run-time
# dependencies at those pins and the project itself, so the jobs' Python steps find river,
# pandas, ... without downloading them. Each job still ships its code (--setup_file in
# deploy/k8s/submit-recommend.yaml), which the SDK's boot installs over this copy.
# The build context is the repo root (.dockerignore there):
#   docker build -t streamml-worker:2.62.0 -f deploy/worker.Dockerfile .
FROM apache/beam_python3.11_sdk:2.62.0
WORKDIR /opt/streamml
COPY requirements-flink.txt ./
RUN pip install --no-cache-dir -r requirements-flink.txt
COPY . ./
# The pins as constraints: the build fails if setup.py's ranges refuse one of them.
RUN pip install --no-cache-dir . -c requirements-flink.txt && rm -rf build ./*.egg-info
# Non-root: for each worker the SDK's boot makes a venv under /opt/apache/beam-venv (with the
# system packages above) and pip-installs the job's staged package there; its files go to /tmp.
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin beam \
    && install -d -o 10001 -g 10001 /opt/apache/beam-venv
USER 10001
# ENTRYPOINT stays the SDK image's /opt/apache/beam/boot; the pod passes --worker_pool.
