"""The wheel on its own: built from the checkout, installed into a fresh virtualenv outside it,
and used from an empty folder. `pip install kdbench` must carry everything the CLI and the app
read: the bundled suites, the lm-eval task YAMLs, the price table and the Streamlit app."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from kdbench import store
from kdbench.config import load_suite
from kdbench.evaluate import task_names
from kdbench.methods import registry

ROOT = Path(__file__).resolve().parent.parent
#: the built-in plugins: the wheel's entry points into kdbench_plugins
ENTRY_POINTS = sorted(
    tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["kdbench"]
)
APP = "kdbench/app/streamlit_app.py"
DATA = (
    "kdbench_leaderboards/__init__.py",
    "kdbench_leaderboards/tiny.toml",
    "kdbench_leaderboards/prices/default.toml",
    "kdbench_leaderboards/tasks/kd_addition.yaml",
    "kdbench_leaderboards/tasks/kd_compare.yaml",
    "kdbench_leaderboards/tasks/utils.py",
    "kdbench_leaderboards/dolly-gpt2.toml",
    "kdbench_leaderboards/qwen-gsm8k.toml",
    "kdbench_leaderboards/tasks/instruct_utils.py",
    "kdbench_leaderboards/tasks/minillm_dolly.yaml",
    APP,
)

pytestmark = pytest.mark.e2e


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string for the plain text suites hold
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"no TOML for {v!r}")


def dump_toml(data: dict) -> str:
    """Enough TOML for a suite: top-level keys, [tables], [[arrays of tables]], inline tables."""

    def is_tables(v: object) -> bool:
        return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)

    lines, tables = [], []
    for k, v in data.items():
        if isinstance(v, dict):
            tables.append((f"[{k}]", v))
        elif is_tables(v):
            tables += [(f"[[{k}]]", t) for t in v]
        else:
            lines.append(f"{k} = {_toml_value(v)}")
    for header, table in tables:
        lines += ["", header] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def shrink(suite: dict) -> dict:
    """The bundled tiny suite cut to seconds, like tests/test_pipeline.py's SHRINK."""
    suite["methods"] = ["sft", "kd"]
    suite["seeds"] = [0]
    suite["teacher"].update(
        arch={"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64},
        train_steps=6,
        max_steps=12,
        examples_per_task=64,  # its own training set, as in the bundled suite, but small
    )
    suite["teacher"]["gate"]["value"] = 0.0
    suite["students"] = suite["students"][:1]
    suite["data"]["n_per_task"] = 64
    suite["budget"].update(steps=4, batch_size=8)
    suite["eval"]["limit"] = 6
    return suite


def _venv(tmp: Path) -> tuple[Path, dict[str, str]]:
    """A fresh virtualenv in ``tmp`` that sees the main venv's third-party packages (torch, ray,
    lm-eval, ...) through a .pth line, and nothing of the checkout: a directory a .pth line adds
    gets no .pth processing of its own, so the editable install's finder never loads."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    main = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "zz_main_venv.pth").write_text("".join(f"{p}\n" for p in main))
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("PYTHONPATH", "KDBENCH_DB", "KDBENCH_TASKS_DIR", "KDBENCH_PRICES", "PYTHONHOME")
    }
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    return venv, env


def test_wheel_installs_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    # build from a copy of what the wheel is made of: no build/ or egg-info of the checkout
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("kdbench", "plugins", "leaderboards"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("kdbench-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(
            zf.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt")
        )
    missing = [n for n in DATA if n not in names]
    assert not missing, f"not in the wheel: {missing}"
    assert not [n for n in names if n.startswith(("leaderboards/", "plugins/", "tests/"))]
    for name in ENTRY_POINTS:
        assert f"{name} = kdbench_plugins." in entry_points

    venv, env = _venv(tmp_path)
    py, kdbench = venv / "bin" / "python", venv / "bin" / "kdbench"
    subprocess.run(
        [*pip, "--python", str(py), "install", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
    )
    work = tmp_path / "empty"
    work.mkdir()

    def run(*cmd: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(c) for c in cmd],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    # everything kdbench reads comes from the new venv, nothing from the checkout
    probe = run(
        py,
        "-c",
        """if True:
        import importlib.metadata as md, json, sys
        from importlib.resources import files
        import kdbench, kdbench_plugins, kdbench_leaderboards
        from kdbench import economics, evaluate
        from kdbench.methods import registry
        eps = md.entry_points(group="kdbench")
        print(json.dumps({
            "files": [kdbench.__file__, kdbench_plugins.__file__, kdbench_leaderboards.__file__,
                      str(evaluate.TASKS_DIR), str(economics.DEFAULT_PRICES),
                      str(getattr(md.distribution("kdbench"), "_path", sys.prefix))]
                     + [sys.modules[ep.value].__file__ for ep in eps if ep.load()],
            "methods": sorted(registry()),
            "tasks": evaluate.task_names(),
            "tiny": files("kdbench_leaderboards").joinpath("tiny.toml").read_text(),
            "sys_path": sys.path,
        }))
        """,
    )
    assert probe.returncode == 0, probe.stderr
    info = json.loads(probe.stdout)
    for f in info["files"]:
        assert Path(f).is_relative_to(venv) and not Path(f).is_relative_to(ROOT), f
    main_site = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}  # third-party only
    inside = [p for p in info["sys_path"] if p and Path(p).resolve().is_relative_to(ROOT)]
    assert set(inside) <= main_site, inside
    assert info["methods"] == sorted(registry())  # the same methods as the checkout
    assert sorted(info["tasks"]) == sorted(task_names())  # the same local tasks as the checkout

    methods = run(kdbench, "methods", "--json")
    assert methods.returncode == 0, methods.stderr
    listed = {m["name"]: m["plugin"] for m in json.loads(methods.stdout)}
    assert sorted(listed) == info["methods"]
    assert set(ENTRY_POINTS) <= set(listed.values())  # every built-in plugin registered

    # the bundled suite by name; a wrong name lists the bundled ones
    dry = run(kdbench, "run", "tiny", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    tiny = tomllib.loads(info["tiny"])
    for name in tiny["methods"] or info["methods"]:  # the suite's methods (empty: every one)
        for student in tiny["students"]:
            assert any(
                line.split()[1:3] == [name, student["name"]] for line in dry.stdout.splitlines()
            ), (name, student["name"])
    wrong = run(kdbench, "run", "no-such-suite")
    assert wrong.returncode == 2 and "tiny" in wrong.stderr and "Traceback" not in wrong.stderr

    # the bundled suite, shrunk, end to end from the empty folder
    (work / "shrunk.toml").write_text(dump_toml(shrink(tiny)))
    db = work / "results" / "kdbench.duckdb"
    done = run(
        kdbench, "run", "shrunk.toml", "--db", db, "--cache", tmp_path / "cache", timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    suite = load_suite(work / "shrunk.toml")
    runs = store.read_runs(db, suite.hash)
    assert sorted(runs.status) == ["ok"] * 6, runs[["run_id", "status", "error"]]
    # the bundled suite's int8 rows (torchao, installed with the wheel): one per scored model
    assert sorted(runs.quant.fillna("full")) == ["full"] * 3 + ["int8"] * 3
    assert sorted(runs.role) == ["student"] * 4 + ["teacher"] * 2
    assert set(runs[runs.role == "student"].method) == {"sft", "kd"}
    metrics = store.read_metrics(db, suite.hash)
    assert set(metrics.task) == {"kd_add2", "kd_noisy_compare"}
    assert set(metrics.run_id) == set(runs.run_id)

    # the installed app renders over that database
    app = Path(info["files"][0]).parent / "app" / "streamlit_app.py"  # kdbench/app in the venv
    assert app.is_file()
    shown = run(
        py,
        "-c",
        f"""if True:
        import json, sys
        from streamlit.testing.v1 import AppTest
        sys.argv = ["streamlit_app.py", "--db", {str(db)!r}]
        at = AppTest.from_file({str(app)!r}, default_timeout=120)
        at.run()
        print(json.dumps({{
            "exceptions": [e.message for e in at.exception],
            "errors": [e.value for e in at.error],
            "tables": [list(map(str, d.value.columns)) for d in at.dataframe],
        }}))
        """,
        timeout=300,
    )
    assert shown.returncode == 0, shown.stderr[-3000:]
    page = json.loads(shown.stdout.strip().splitlines()[-1])
    assert not page["exceptions"] and not page["errors"], page
    assert page["tables"], page
