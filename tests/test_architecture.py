"""The layout's rules hold: import-linter contracts (`.importlinter`), short modules, and a
docstring in every package saying what lives there."""
import ast
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("benchmarks", "pipelines", "transforms", "serving", "simulator", "experiments", "monitoring", "core", "stores", "models",
            "schemas")
MAX_LINES = 300
LINT_IMPORTS = pathlib.Path(sys.executable).with_name("lint-imports")


def _lint(root: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, timeout=300)


def test_the_import_contracts_hold():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


@pytest.fixture
def copy(tmp_path):
    """The packages and the contracts, copied where a test may break them."""
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path)
    return tmp_path


@pytest.mark.parametrize("module, line, broken", [
    ("core/records.py", "import apache_beam", "never import Beam"),
    ("transforms/chunks.py", "import pipelines.options", "Entry points over transforms"),
    ("transforms/io/kafkaio.py", "import transforms.io.kafka_read", "No import cycles"),
    ("transforms/coders.py", "import transforms.learning.examples", "capabilities over shared steps"),
    ("serving/__init__.py", "import transforms.io.files", "published artefacts"),
    ("stores/snapshots.py", "import models.serde", "Entry points over transforms"),
    ("experiments/ratio.py", "import serving.app", "Entry points over transforms"),
])
def test_a_broken_rule_is_caught(copy, module, line, broken):
    path = copy / module
    path.write_text(path.read_text() + f"\n{line}  # planted\n")
    result = _lint(copy)
    assert result.returncode != 0
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout, result.stdout[-3000:]


def _modules():
    for name in PACKAGES:
        yield from sorted((ROOT / name).rglob("*.py"))


def test_no_module_is_long():
    long = {str(p.relative_to(ROOT)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_every_package_says_what_lives_there():
    silent = [str(p.relative_to(ROOT)) for p in _modules()
              if p.name == "__init__.py" and not ast.get_docstring(ast.parse(p.read_text()))]
    assert not silent, f"packages without a docstring: {silent}"


def test_the_architecture_doc_names_what_exists():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"\b((?:[a-z_]+/)+[a-z_]+\.py)\b", doc))
    assert named, "docs/architecture.md names no module"
    missing = sorted(p for p in named if not (ROOT / p).is_file())
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"
    unnamed = [name for name in PACKAGES if f"{name}/" not in doc]
    assert not unnamed, f"docs/architecture.md does not show the packages {unnamed}"
