"""The Kubernetes manifests in deploy/k8s are valid, and agree with the versions we pin; the
images (deploy/*Dockerfile) and the installed package hold what the jobs need, and no more.

No Kubernetes cluster exists here, so validity is checked against schemas: core kinds against
the Kubernetes API schemas shipped by `kubernetes-validate`, and the `FlinkDeployment`
against the CRD of the Flink Kubernetes operator, taken from its API jar on Maven Central
(fetched at set-up by scripts/k8s_schemas.sh, never by the tests).
Both strictly: an unknown field (a typo Kubernetes would silently prune) is an error.
No Docker daemon either: the Dockerfiles and .dockerignore are checked as text.
"""
import copy
import pathlib
import re
import shlex
import subprocess
import sys
import zipfile

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
MANIFESTS = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
KUBERNETES_VERSION = "1.32"
OPERATOR_API = "org.apache.flink:flink-kubernetes-operator-api:1.10.0"
CRD = "META-INF/fabric8/flinkdeployments.flink.apache.org-v1.yml"
SCHEMAS_SCRIPT = "scripts/k8s_schemas.sh"
SUBMIT_IMAGE = ROOT / "deploy" / "Dockerfile"
WORKER_IMAGE = ROOT / "deploy" / "worker.Dockerfile"
SERVING_IMAGE = ROOT / "deploy" / "serving.Dockerfile"


def _documents():
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def _kind(kind):
    return [d for d in _documents() if d["kind"] == kind]


@pytest.fixture(scope="module")
def flink_deployment_schema():
    """The FlinkDeployment v1beta1 schema, from the operator's API jar (Maven Central)."""
    jar = ROOT / ".cache" / "k8s" / f"flink-kubernetes-operator-api-{OPERATOR_API.rsplit(':', 1)[1]}.jar"
    if not jar.is_file():
        pytest.fail(f"{jar.relative_to(ROOT)} is missing: set-up fetches it ({OPERATOR_API} from Maven "
                    f"Central); run `bash {SCHEMAS_SCRIPT}` (or `bash scripts/setup.sh`)", pytrace=False)
    with zipfile.ZipFile(jar) as z:
        crd = yaml.safe_load(z.read(CRD))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    return _strict(version["schema"]["openAPIV3Schema"])


def _strict(schema):
    """The schema with unknown properties refused wherever it lists the known ones."""
    schema = copy.deepcopy(schema)
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return schema


def _validate_flink_deployment(doc, schema):
    jsonschema.validate({"spec": doc["spec"]}, schema)
    # The operator puts this pod template through the Kubernetes Pod schema as well.
    kubernetes_validate.validate(doc["spec"]["taskManager"]["podTemplate"], KUBERNETES_VERSION, strict=True)


def test_every_manifest_is_valid_against_its_schema(flink_deployment_schema):
    documents = _documents()
    assert {d["kind"] for d in documents} >= {"FlinkDeployment", "Job", "ConfigMap", "PersistentVolumeClaim"}
    for doc in documents:
        if doc["kind"] == "FlinkDeployment":
            assert doc["apiVersion"] == "flink.apache.org/v1beta1"
            _validate_flink_deployment(doc, flink_deployment_schema)
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validation_catches_mistakes(flink_deployment_schema):
    (deployment,) = _kind("FlinkDeployment")
    typo = copy.deepcopy(deployment)
    typo["spec"]["taskManager"]["replica"] = typo["spec"]["taskManager"].pop("replicas")
    with pytest.raises(jsonschema.ValidationError, match="replica"):
        _validate_flink_deployment(typo, flink_deployment_schema)
    old_flink = copy.deepcopy(deployment)
    old_flink["spec"]["flinkVersion"] = "v1_12"
    with pytest.raises(jsonschema.ValidationError):
        _validate_flink_deployment(old_flink, flink_deployment_schema)
    (job,) = _kind("Job")
    bad = copy.deepcopy(job)
    bad["spec"]["template"]["spec"]["containers"][0]["command"] = "python"  # must be a list
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


def test_manifests_agree_with_the_pinned_versions_and_each_other():
    (deployment,) = _kind("FlinkDeployment")
    (job,) = _kind("Job")
    (config,) = [c for c in _kind("ConfigMap") if c["metadata"]["name"] == "streamml-recommend"]
    beam = re.search(r"^apache-beam==(\S+)$", (ROOT / "requirements-flink.txt").read_text(), re.M).group(1)
    flink_minor = re.search(r"^FLINK_VERSION=(\d+)\.(\d+)\.", (ROOT / "scripts" / "flink.sh").read_text(), re.M)
    assert deployment["spec"]["flinkVersion"] == f"v{flink_minor.group(1)}_{flink_minor.group(2)}"
    assert deployment["spec"]["image"].startswith(f"flink:{flink_minor.group(1)}.{flink_minor.group(2)}.")

    # The set-up script fetches the operator API this test validates against.
    script = (ROOT / SCHEMAS_SCRIPT).read_text()
    assert re.search(r"^OPERATOR_VERSION=(\S+)", script, re.M).group(1) == OPERATOR_API.rsplit(":", 1)[1]

    containers = {c["name"]: c for c in deployment["spec"]["taskManager"]["podTemplate"]["spec"]["containers"]}
    pool = containers["beam-worker-pool"]
    # The project's worker image, built FROM Beam's SDK image at the job server's Beam version.
    assert pool["image"] == f"streamml-worker:{beam}"
    assert f"streamml-worker:{beam}" in WORKER_IMAGE.read_text()  # its build command, as documented
    (base,) = [args for name, args in _instructions(WORKER_IMAGE) if name == "FROM"]
    assert base == f"apache/beam_python3.11_sdk:{beam}"  # the SDK must match the job server
    assert pool["args"] == ["--worker_pool"]
    pool_port = pool["ports"][0]["containerPort"]

    args = " ".join(job["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "--environment_type=EXTERNAL" in args and f"--environment_config=localhost:{pool_port}" in args
    # The operator's REST service is <name>-rest; the job reaches it by the ConfigMap's address.
    assert config["data"]["FLINK_MASTER"].startswith(f"{deployment['metadata']['name']}-rest.")
    namespaces = {d["metadata"].get("namespace") for d in _documents()}
    assert namespaces == {deployment["metadata"]["namespace"]}
    claims = {v["persistentVolumeClaim"]["claimName"]
              for v in deployment["spec"]["taskManager"]["podTemplate"]["spec"]["volumes"]}
    assert claims <= {d["metadata"]["name"] for d in _kind("PersistentVolumeClaim")}


# ---- images -------------------------------------------------------------------------------
def _instructions(dockerfile):
    """(INSTRUCTION, arguments) of a Dockerfile: continuation lines joined, comments dropped."""
    out, current = [], ""
    for line in pathlib.Path(dockerfile).read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        current += line.strip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        if current:
            name, _, args = current.partition(" ")
            out.append((name.upper(), " ".join(args.split())))
        current = ""
    return out


def _final_stage(dockerfile):
    """The instructions of the image's last build stage (from its last FROM on)."""
    instructions = _instructions(dockerfile)
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def _dockerignored(path, patterns):
    """Whether Docker leaves `path` (relative to the build context) out, by .dockerignore's
    rules: patterns are matched against the path and each of its parent folders, `**` spans
    folders, `!` re-includes, and the last matching pattern decides."""
    parts = path.split("/")
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = "^" + re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*") \
            .replace(r"\*", "[^/]*").replace(r"\?", "[^/]") + "$"
        if any(re.match(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            ignored = not negate
    return ignored


def _dockerignore_patterns():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_the_build_context_leaves_out_environments_outputs_caches_and_keys():
    patterns = _dockerignore_patterns()
    for path in [".venv/bin/python", ".venv-flink/lib/python3.11/site-packages/x.py", "out/recs/report.png",
                 ".cache/k8s/flink-kubernetes-operator-api-1.10.0.jar", ".cache/prism/bin/prism",
                 ".run/flink/log/x.log", ".pytest_cache/v/cache/lastfailed", ".import_linter_cache/x", ".git/HEAD",
                 "streamml.egg-info/PKG-INFO", "transforms/__pycache__/x.cpython-311.pyc", "models/x.pyc",
                 # keys and stores wherever they are, not only under out/
                 "signing.key", "deploy/keys/snapshots.key", "learner.sqlite", "stores/features.sqlite-wal"]:
        assert _dockerignored(path, patterns), f"{path} would be sent to the image builds"
    # ... but what the images are built from stays in.
    for path in ["setup.py", "requirements-flink.txt", "scripts/flink.sh", "scripts/lib.sh",
                 "pipelines/recommend.py", "transforms/__init__.py", "schemas/interaction.avsc"]:
        assert not _dockerignored(path, patterns), f"{path} would be missing from the image builds"


def test_the_dockerignore_check_catches_mistakes():
    patterns = _dockerignore_patterns()
    assert not _dockerignored(".venv/bin/python", [p for p in patterns if p.strip("/") != ".venv"])
    assert not _dockerignored("deploy/keys/snapshots.key", [p for p in patterns if "key" not in p])
    assert not _dockerignored("deploy/keys/snapshots.key", [p.replace("**/", "") for p in patterns])
    assert _dockerignored("setup.py", patterns + ["*.py"])
    assert not _dockerignored("a.key", patterns + ["!a.key"])


@pytest.mark.parametrize("dockerfile", [SUBMIT_IMAGE, WORKER_IMAGE, SERVING_IMAGE], ids=lambda p: p.name)
def test_both_images_end_up_as_a_non_root_user(dockerfile):
    stage = _final_stage(dockerfile)
    users = [args for name, args in stage if name == "USER"]
    assert users, f"{dockerfile.name} runs as root (no USER)"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{dockerfile.name} ends as USER {users[-1]}, not a numeric non-root uid"
    # The user exists (a home for pip's and Maven's caches) ...
    assert any(name == "RUN" and re.search(rf"\buseradd\b.*--uid {uid}\b", args) for name, args in stage)
    # ... and nothing after the last USER switches back.
    last_user = max(i for i, (name, _) in enumerate(stage) if name == "USER")
    assert all(name != "USER" for name, _ in stage[last_user + 1:])


def test_the_submit_job_ships_the_project_to_the_workers():
    (job,) = _kind("Job")
    container = job["spec"]["template"]["spec"]["containers"][0]
    (command,) = container["args"]  # one shell command: a folded block, no comments inside
    words = shlex.split(command)
    assert "--setup_file=./setup.py" in words, "the workers would not get the project's code"
    assert words[:2] == ["exec", ".venv-flink/bin/python"]
    # ./setup.py is the project's: the Job's working directory is the image's /app, where the
    # project is copied and owned by the user the image runs as.
    assert container.get("workingDir", "/app") == "/app"
    stage = _final_stage(SUBMIT_IMAGE)
    assert [args for name, args in stage if name == "WORKDIR"][-1] == "/app"
    assert any(name == "COPY" and args.split()[-2:] == [".", "/app"] for name, args in stage)
    assert any(name == "RUN" and "scripts/flink.sh install" in args for name, args in stage)


def test_the_submitter_and_every_worker_read_one_state_key_from_a_secret_not_in_the_repo():
    """Workers sign and verify model state (models/serde.py) with keys they read themselves: all
    of them, and the submitter that checks the keys first, from the same Secret."""
    (job,) = _kind("Job")
    (flink,) = _kind("FlinkDeployment")
    containers = job["spec"]["template"]["spec"]["containers"] + [
        c for c in flink["spec"]["taskManager"]["podTemplate"]["spec"]["containers"] if c["name"] == "beam-worker-pool"]
    refs = [[e["valueFrom"]["secretKeyRef"] for e in c.get("env", []) if e["name"] == "STREAMML_STATE_KEY"]
            for c in containers]
    assert len(containers) == 2 and all(len(r) == 1 for r in refs), refs
    assert refs[0] == refs[1] == [{"name": "streamml-state-key", "key": "keys"}]
    assert not _kind("Secret"), "a Secret's data would be in the repo: docs/DEPLOY.md says how to make it"


def test_the_worker_image_installs_the_pins_and_the_project():
    runs = [args for name, args in _final_stage(WORKER_IMAGE) if name == "RUN"]
    pip = [shlex.split(run.split("&&")[0]) for run in runs if re.match(r"(python3? -m )?pip install\b", run)]
    assert any("-r" in words and words[words.index("-r") + 1] == "requirements-flink.txt" for words in pip)
    # The project itself (not editable), under the pins as constraints.
    assert any("." in words and "-e" not in words and "-c" in words
               and words[words.index("-c") + 1] == "requirements-flink.txt" for words in pip), \
        "the worker image does not install the project with requirements-flink.txt as constraints"
    copies = [args.split() for name, args in _final_stage(WORKER_IMAGE) if name == "COPY"]
    assert any(words[0] == "." for words in copies)  # the whole (dockerignored) context


# ---- the installed package ----------------------------------------------------------------
def _pins(name):
    """name -> version of a requirements file, following its `-r` includes."""
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            pins.update(_pins(line[3:].strip()))
        elif line:
            package, version = line.split("==")
            pins[_canonical(package)] = version.strip()
    return pins


def _canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower().strip()


@pytest.fixture(scope="module")
def setup_metadata(tmp_path_factory):
    """Requirements and files of setup.py as it is now (not as the venv last installed it)."""
    base = tmp_path_factory.mktemp("egg")
    got = subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(base)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stderr[-2000:]
    (info,) = base.glob("*.egg-info")
    section, requires = None, {}
    for line in (info / "requires.txt").read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif line.strip():
            requires.setdefault(section, []).append(line.strip())
    return requires, (info / "SOURCES.txt").read_text().split()


def test_setup_ranges_accept_the_pins_and_install_nothing_for_tests(setup_metadata):
    from packaging.requirements import Requirement

    requires, sources = setup_metadata
    run_time = [Requirement(r) for r in requires[None]]
    test = [Requirement(r) for r in requires["test"]]
    serving = [Requirement(r) for r in requires["serving"]]  # the serving plane: the main .venv only
    serving += [Requirement(r) for r in requires["lake"]]  # ... and the data lake's S3 and DuckDB
    assert set(requires) == {None, "serving", "lake", "test"}
    test_tools = {"pytest", "pyyaml", "jsonschema", "kubernetes-validate", "import-linter"}
    assert {_canonical(r.name) for r in test} >= test_tools
    assert not test_tools & {_canonical(r.name) for r in run_time}, "`pip install .` would install test tools"
    for requirement in run_time + serving + test:
        assert requirement.specifier, f"{requirement.name} has no range"
        assert not any(spec.operator == "==" for spec in requirement.specifier), f"{requirement} is a pin"
    for file, wanted in [("requirements.txt", run_time + serving), ("requirements-flink.txt", run_time),
                         ("requirements-test.txt", run_time + serving + test)]:
        pins = _pins(file)
        for requirement in wanted:
            version = pins.get(_canonical(requirement.name))
            assert version, f"{file} does not pin {requirement.name}"
            assert requirement.specifier.contains(version), f"setup.py's {requirement} refuses {file}'s {version}"
    for file in ["requirements.txt", "requirements-flink.txt"]:
        assert not test_tools & set(_pins(file)), f"{file} pins a test tool"
    # The packages: the jobs' code and the Avro schemas, not the tests or the benchmarks.
    assert "schemas/interaction.avsc" in sources and "pipelines/recommend.py" in sources
    assert not [s for s in sources if s.startswith(("tests/", "benchmarks/"))]


# ---- the serving plane ---------------------------------------------------------------------
def _serving_container():
    (deployment,) = [d for d in _kind("Deployment") if d["metadata"]["name"] == "streamml-serving"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return deployment, container


def test_the_serving_manifests_agree_with_each_other_and_the_image():
    deployment, container = _serving_container()
    (service,) = [d for d in _kind("Service") if d["metadata"]["name"] == "streamml-serving"]
    (autoscaler,) = _kind("HorizontalPodAutoscaler")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels and service["spec"]["selector"] == labels
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in container["ports"]}
    assert autoscaler["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                    "name": deployment["metadata"]["name"]}
    assert container["image"].startswith("streamml-serving:") and "streamml-serving:latest" in SERVING_IMAGE.read_text()
    (entrypoint,) = [args for name, args in _final_stage(SERVING_IMAGE) if name == "ENTRYPOINT"]
    assert yaml.safe_load(entrypoint) == ["/app/.venv/bin/python", "-m", "serving"]
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]}
    assert secrets == {"STREAMML_STATE_KEY": "streamml-state-key", "STREAMML_API_TOKEN": "streamml-api-token"}


def test_the_serving_container_runs_as_a_plain_process(postgres_url, redis_url, kafka_bootstrap, tmp_path):
    """The Deployment's command, environment and probes, run here as a process: the ConfigMap's
    addresses swapped for this machine's servers, the Secrets' for test values, loopback and a
    free port for the pod's address."""
    import requests
    from river import linear_model

    from models import serde
    from stores.registry import open_registry
    from tests.servers import free_port, wait

    deployment, container = _serving_container()
    (config,) = [c for c in _kind("ConfigMap") if c["metadata"]["name"] == "streamml-serving"]
    here = {"REGISTRY": postgres_url, "ONLINE_STORE": redis_url,
            "EVENT_LOG": f"kafka://{kafka_bootstrap}/interactions-{tmp_path.name}",
            "KAFKA_REQUESTS": f"kafka://{kafka_bootstrap}/serving-{tmp_path.name}"}
    assert set(here) == set(config["data"])
    key, port = "4f" * 32, free_port()
    args = [re.sub(r"\$\((\w+)\)", lambda m: here[m.group(1)], a) for a in container["args"]]
    args[args.index("--host") + 1], args[args.index("--port") + 1] = "127.0.0.1", str(port)
    env = {**{k: v for k, v in __import__("os").environ.items() if not k.startswith("STREAMML_")},
           "STREAMML_STATE_KEY": key, "STREAMML_API_TOKEN": "t0ken"}
    process = subprocess.Popen([sys.executable, "-m", "serving", *args], env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"

    def probe(name):
        try:
            return requests.get(url + container[name]["httpGet"]["path"], timeout=2).status_code
        except requests.ConnectionError:
            return None

    try:
        wait(lambda: probe("startupProbe") == 200, 60)
        assert (probe("livenessProbe"), probe("readinessProbe")) == (200, 503)  # alive, no model yet
        registry = open_registry(postgres_url)
        registry.publish("recommender", serde.dumps(linear_model.LogisticRegression(), serde.keyring(key)),
                         step=1, clock_ms=1)
        wait(lambda: probe("readinessProbe") == 200, 30)
        event = {"event_type": "click", "impression_id": "imp", "user_id": "u", "item_id": "i"}
        assert requests.post(f"{url}/events", json=event, timeout=5).status_code == 401
        assert requests.post(f"{url}/events", json=event, headers={"Authorization": "Bearer t0ken"},
                             timeout=5).status_code == 202
    finally:
        process.terminate()
        code, errors = process.wait(30), process.stderr.read()
    assert code in (0, -15) and "Traceback" not in errors, errors
