"""Installs the project so Beam workers can ship it with `--setup_file ./setup.py`."""
import pathlib

import setuptools

REQUIREMENTS = [
    line.split("#")[0].strip()
    for line in pathlib.Path(__file__).with_name("requirements.txt").read_text().splitlines()
    if line.split("#")[0].strip() and not line.startswith(("pytest", "matplotlib"))
]

setuptools.setup(
    name="streamml",
    version="0.1.0",
    description="Real-time machine learning on Apache Beam: online learning with river models.",
    packages=setuptools.find_packages(include=["pipelines*", "transforms*", "models*", "schemas*"]),
    package_data={"schemas": ["*.avsc"]},
    python_requires=">=3.11",
    install_requires=REQUIREMENTS,
)
