"""Installs the project: `pip install .` for the jobs, `pip install ".[test]"` for the tests
(`.[serving]` for the serving plane, `.[lake]` for the data lake on S3 and DuckDB).

Beam workers get the code with `--setup_file ./setup.py`. The dependencies are ranges: the
exact versions are pinned in requirements.txt (main .venv, Beam 2.77.0), requirements-flink.txt
(.venv-flink and the worker image, Beam 2.62.0) and requirements-test.txt, and set-up installs
them with this file's ranges checked against the pins (scripts/setup.sh, scripts/flink.sh).
"""
import setuptools

# What the jobs need at run time; nothing for tests.
INSTALL_REQUIRES = [
    "apache-beam>=2.62,<3",
    "river>=0.26,<0.27",
    "pandas>=2.2,<4",
    "numpy>=2.2,<3",
    "fastavro>=1.9,<2",
    "cramjam>=2.7,<3",  # Avro files with the snappy codec (core/avro.py)
    "backports-zstd>=1.0,<2",  # ... and with the zstandard codec, as fastavro reads it before Python 3.14
    "confluent-kafka[avro,schemaregistry]>=2.3,<3",  # + Confluent wire format (core/payloads.py)
    "matplotlib>=3.8,<4",  # pipelines.recommend writes a PNG report
    "tqdm>=4.66,<5",  # progress bars
    "psycopg[binary]>=3.1,<4",  # a model registry on PostgreSQL (stores.sql)
    "redis>=5,<9",  # an online store on Redis (stores.online)
]

# The serving plane (`python -m serving`): an ASGI app on uvicorn. Not on Beam's workers.
SERVING_REQUIRES = [
    "fastapi>=0.165,<1",  # its telemetry= setting (serving.app)
    "uvicorn>=0.30,<1",
    "uvloop>=0.19,<1",  # uvicorn's event loop and HTTP parser when installed: several times h11's rate
    "httptools>=0.6,<1",
    "prometheus-client>=0.20,<1",  # GET /metrics
    "cachetools>=5,<9",  # a short cache of rankings
    "cavro>=1.0,<2",  # the records it logs, encoded: fastavro's bytes, 2.3 times as fast (serving/encoding.py)
]

# The data lake (pipelines.land, pipelines.curate): s3:// through Beam's S3 file system, and
# analytical queries over the lake. Parquet is pyarrow's, which Beam already needs.
LAKE_REQUIRES = [
    "boto3>=1.28,<2",  # Beam's S3 file system; reads AWS_ENDPOINT_URL_S3 (a local S3 store)
    "duckdb>=1.1,<3",
]

TEST_REQUIRES = [
    "pytest>=8,<10",
    "pyyaml>=6,<7",  # the Kubernetes manifests (tests/test_deploy.py)
    "jsonschema>=4.20,<5",
    "kubernetes-validate>=1.32,<2",
    "import-linter>=2.1,<3",
    "hypothesis>=6.100,<7",  # property-based fuzzing of the decoders (tests/test_fuzz.py)
    "playwright>=1.45,<2",  # drives Debian's chromium in the dashboard's tests (no browser download)
]

# Top-level packages and all their subpackages (transforms.io, transforms.features, ...);
# not tests, not benchmarks.
PACKAGES = ["core", "models", "stores", "transforms", "pipelines", "simulator", "serving", "schemas", "experiments", "monitoring"]

setuptools.setup(
    name="streamml",
    version="0.1.0",
    description="Real-time machine learning on Apache Beam: online learning with river models.",
    packages=setuptools.find_packages(include=[p for name in PACKAGES for p in (name, f"{name}.*")]),
    package_data={"schemas": ["*.avsc"], "serving": ["static/*", "static/vendor/*"]},
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require={"serving": SERVING_REQUIRES, "lake": LAKE_REQUIRES, "test": TEST_REQUIRES},
)
