"""The Kubernetes manifests in deploy/k8s are valid, and agree with the versions we pin.

No Kubernetes cluster exists here, so validity is checked against schemas: core kinds against
the Kubernetes API schemas shipped by `kubernetes-validate`, and the `FlinkDeployment`
against the CRD of the Flink Kubernetes operator, taken from its API jar on Maven Central.
Both strictly: an unknown field (a typo Kubernetes would silently prune) is an error.
"""
import copy
import pathlib
import re
import subprocess
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


def _documents():
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def _kind(kind):
    return [d for d in _documents() if d["kind"] == kind]


@pytest.fixture(scope="module")
def flink_deployment_schema():
    """The FlinkDeployment v1beta1 schema, from the operator's API jar (Maven Central)."""
    folder = ROOT / ".cache" / "k8s"
    jar = folder / f"flink-kubernetes-operator-api-{OPERATOR_API.rsplit(':', 1)[1]}.jar"
    if not jar.is_file():
        got = subprocess.run(["mvn", "-q", "-B", "dependency:copy", f"-Dartifact={OPERATOR_API}",
                              f"-DoutputDirectory={folder}"], capture_output=True, text=True, timeout=600)
        assert got.returncode == 0, f"could not fetch {OPERATOR_API}:\n{got.stdout[-2000:]}{got.stderr[-2000:]}"
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
    (config,) = _kind("ConfigMap")
    beam = re.search(r"^apache-beam==(\S+)$", (ROOT / "requirements-flink.txt").read_text(), re.M).group(1)
    flink_minor = re.search(r"^FLINK_VERSION=(\d+)\.(\d+)\.", (ROOT / "scripts" / "flink.sh").read_text(), re.M)
    assert deployment["spec"]["flinkVersion"] == f"v{flink_minor.group(1)}_{flink_minor.group(2)}"
    assert deployment["spec"]["image"].startswith(f"flink:{flink_minor.group(1)}.{flink_minor.group(2)}.")

    containers = {c["name"]: c for c in deployment["spec"]["taskManager"]["podTemplate"]["spec"]["containers"]}
    pool = containers["beam-worker-pool"]
    assert pool["image"] == f"apache/beam_python3.11_sdk:{beam}"  # the SDK must match the job server
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
