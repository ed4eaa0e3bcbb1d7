"""The cluster definitions in ``cluster/``: the ``ray up`` config and the KubeRay ``RayJob``
parse and name what they must, and the README's commands name files that exist."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "cluster"
LAUNCHER = CLUSTER / "ray-cluster.yaml"
RAYJOB = CLUSTER / "rayjob.yaml"
README = CLUSTER / "README.md"

LAUNCHER_KEYS = {
    "cluster_name",
    "max_workers",
    "provider",
    "available_node_types",
    "head_node_type",
    "auth",
    "head_start_ray_commands",
    "worker_start_ray_commands",
}


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.name}: expected one YAML mapping"
    return data


@pytest.fixture(scope="module")
def launcher() -> dict[str, Any]:
    return _load(LAUNCHER)


@pytest.fixture(scope="module")
def rayjob() -> dict[str, Any]:
    return _load(RAYJOB)


# --- ray up ---------------------------------------------------------------------------------


def test_launcher_has_the_required_keys(launcher: dict[str, Any]) -> None:
    assert set(launcher) >= LAUNCHER_KEYS, LAUNCHER_KEYS - set(launcher)
    assert launcher["provider"]["type"]
    assert isinstance(launcher["max_workers"], int)
    types = launcher["available_node_types"]
    assert launcher["head_node_type"] in types
    for name, node in types.items():
        assert {"resources", "node_config"} <= set(node), name


def test_launcher_matches_rays_schema(launcher: dict[str, Any]) -> None:
    """Validated against the schema the installed Ray's launcher uses (read without importing
    Ray, so this stays fast)."""
    import jsonschema  # installed with ray[default], a kdbench dependency

    spec = importlib.util.find_spec("ray")
    assert spec is not None and spec.origin, "ray is a kdbench dependency"
    schema_path = Path(spec.origin).parent / "autoscaler" / "ray-schema.json"
    assert schema_path.exists(), f"Ray's cluster config schema is missing: {schema_path}"
    jsonschema.validate(launcher, json.loads(schema_path.read_text()))


def test_launcher_has_a_gpu_worker_type(launcher: dict[str, Any]) -> None:
    head = launcher["head_node_type"]
    gpu_workers = {
        name: node
        for name, node in launcher["available_node_types"].items()
        if name != head and node["resources"].get("GPU", 0) >= 1
    }
    assert gpu_workers, "no worker node type advertises a GPU"
    for name, node in gpu_workers.items():
        assert node.get("min_workers", 0) == 0, name  # scales from zero
        assert 1 <= node["max_workers"] <= launcher["max_workers"], name


def test_launcher_installs_kdbench_and_starts_ray(launcher: dict[str, Any]) -> None:
    setup = [
        *launcher.get("setup_commands", []),
        *launcher.get("head_setup_commands", []),
        *launcher.get("worker_setup_commands", []),
    ]
    installs = [c for c in setup if re.search(r"\bpip install\b.*\bkdbench\b", c)]
    assert installs, setup
    torch = [i for i, c in enumerate(setup) if re.search(r"\bpip install\b.*\btorch\b", c)]
    assert torch and torch[0] < setup.index(installs[0]), "torch must be installed first"
    assert any("ray start --head" in c for c in launcher["head_start_ray_commands"])
    assert any("ray start" in c and "--address" in c for c in launcher["worker_start_ray_commands"])


def test_launcher_file_mounts_exist_locally(launcher: dict[str, Any]) -> None:
    """Local sides of file_mounts are relative to the repository root, where `ray up` runs."""
    for remote, local in launcher.get("file_mounts", {}).items():
        assert (ROOT / local).exists(), f"{remote}: {local} is not in the repository"


# --- KubeRay --------------------------------------------------------------------------------


def _containers(group: dict[str, Any]) -> list[dict[str, Any]]:
    return group["template"]["spec"]["containers"]


def test_rayjob_kind_and_entrypoint(rayjob: dict[str, Any]) -> None:
    assert rayjob["apiVersion"] == "ray.io/v1"
    assert rayjob["kind"] == "RayJob"
    spec = rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    run = spec["entrypoint"].split("&&")[-1]  # after an optional `cd DIR &&`
    argv = shlex.split(run)
    assert argv[:2] == ["kdbench", "run"], run
    assert (ROOT / argv[2]).is_file(), f"suite {argv[2]} is not in the repository"
    assert "--address" in argv
    assert "--db" in argv


def test_rayjob_mounts_the_results_volume_on_every_pod(rayjob: dict[str, Any]) -> None:
    cluster = rayjob["spec"]["rayClusterSpec"]
    argv = shlex.split(rayjob["spec"]["entrypoint"].split("&&")[-1])
    db = Path(argv[argv.index("--db") + 1])
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        volumes = {v["name"] for v in group["template"]["spec"].get("volumes", [])}
        for container in _containers(group):
            mounts = {
                m["mountPath"]: m["name"]
                for m in container.get("volumeMounts", [])
                if m["name"] in volumes
            }
            assert any(db.is_relative_to(path) for path in mounts), (container["name"], db)


def test_rayjob_has_a_gpu_worker_group(rayjob: dict[str, Any]) -> None:
    cluster = rayjob["spec"]["rayClusterSpec"]
    assert _containers(cluster["headGroupSpec"])[0]["image"]
    gpu_groups = [
        group
        for group in cluster["workerGroupSpecs"]
        if any(
            int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)) >= 1
            for c in _containers(group)
        )
    ]
    assert gpu_groups, "no worker group asks for nvidia.com/gpu"
    for group in gpu_groups:
        assert group["groupName"]
        assert group.get("minReplicas", 0) <= group["replicas"] <= group["maxReplicas"]


# --- README ---------------------------------------------------------------------------------


def test_readme_commands_name_existing_files() -> None:
    text = README.read_text()
    assert "planned" not in text
    code = "\n".join(
        re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S) + re.findall(r"`([^`\n]+)`", text)
    )
    named = set(re.findall(r"(?<![\w/.-])cluster/[\w./-]*[\w]", code))
    assert {"cluster/ray-cluster.yaml", "cluster/rayjob.yaml"} <= named, named
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"README commands name files that do not exist: {missing}"
    for command in ("ray up", "ray down", "ray job submit", "kubectl apply -f"):
        assert command in code, command
