"""The installable package: a wheel built from the checkout, installed into a fresh venv, used from elsewhere.

What the Docker image does (``COPY pyproject.toml README.md pipeline workers`` + ``pip install .``),
without the network: the wheel is built from a copy of exactly those paths (so nothing outside
them, and no stale ``build/`` of the checkout, can leak in) and installed with ``--no-deps``; the
dependencies come from this interpreter's site-packages through a ``.pth`` line in the fresh venv.
That directory's own ``.pth`` files (the editable install's finder among them) are not processed
that way, so ``pipeline`` and ``workers`` can only come from the wheel, and every command runs
from a folder outside the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline import contracts

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
#: What infra/Dockerfile copies before ``pip install .``.
BUILD_INPUTS = ("pyproject.toml", "README.md", "pipeline", "workers")


@dataclass(frozen=True)
class Installed:
    python: Path
    hopline: Path
    site_packages: Path
    cwd: Path
    env: dict[str, str]

    def run(self, *args: str | Path, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(a) for a in args], cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=timeout_s
        )


def _pip(*args: str) -> None:
    """This interpreter's pip, offline (``--no-index``): the test must not download anything."""
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args, "--no-index"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _build_wheel(work: Path) -> Path:
    source = work / "src"
    source.mkdir()
    for name in BUILD_INPUTS:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, source / name)
    wheelhouse = work / "wheelhouse"
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(wheelhouse), str(source))
    (wheel,) = wheelhouse.glob("hopline-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("wheel")
    wheel = _build_wheel(work)
    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site_packages = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # Installed before the dependencies are linked in: pip then sees an empty environment (not this
    # checkout's editable install) and puts the wheel's files into the fresh site-packages.
    _pip("--python", str(python), "install", "--no-deps", str(wheel))
    ours = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    (site_packages / "hopline-test-dependencies.pth").write_text("".join(f"{path}\n" for path in sorted(ours)))
    cwd = work / "elsewhere"
    cwd.mkdir()
    assert ROOT not in cwd.parents
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("HOPLINE_")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return Installed(python, env_dir / "bin" / "hopline", site_packages, cwd, env)


#: Run by the fresh venv's interpreter: where the packages come from, every contract, the package data.
PROBE = """
import json
from importlib.metadata import entry_points
from pathlib import Path

import pipeline, workers
from pipeline import contracts
from pipeline.contracts import Contract
from pipeline.contracts.codec import SCHEMA_DIR
from pipeline.demo import SAMPLES_DIR
from workers.asr.checkpoint import ASSETS

loaded = [Contract.load(path.stem).name for path in sorted(SCHEMA_DIR.glob("*.avsc"))]
commands = sorted(ep.name for ep in entry_points(group="hopline.commands") if ep.load())
print(json.dumps({
    "pipeline": pipeline.__file__,
    "workers": workers.__file__,
    "all": sorted(c.name for c in contracts.ALL),
    "loaded": loaded,
    "commands": commands,
    "samples": str(SAMPLES_DIR),
    "assets": sorted(p.name for p in ASSETS.iterdir()),
}))
"""


def test_the_wheel_carries_the_packages_every_contract_and_the_package_data(installed: Installed) -> None:
    done = installed.run(installed.python, "-c", PROBE)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(done.stdout)
    for package in ("pipeline", "workers"):
        assert Path(probe[package]).is_relative_to(installed.site_packages), f"{package} is not the wheel's"
    assert len(probe["all"]) == len(contracts.ALL) and sorted(probe["loaded"]) == probe["all"], (
        "a schema file per contract"
    )
    assert Path(probe["samples"]).is_relative_to(installed.site_packages)
    assert {"asr.pt", "lexicon.txt", "lm.arpa", "tokens.txt"} <= set(probe["assets"])
    assert {"kafka", "ingress", "windowing", "worker", "asr", "assembly", "control", "observe", "demo"} <= set(
        probe["commands"]
    )
    help_text = installed.run(installed.hopline, "--help")
    assert help_text.returncode == 0 and "demo" in help_text.stdout, help_text.stderr[-3000:]


def test_the_installed_command_transcribes_a_bundled_sample(installed: Installed) -> None:
    samples = installed.site_packages / "pipeline" / "demo" / "samples"
    first = json.loads((samples / "manifest.json").read_text())["samples"][0]
    done = installed.run(installed.hopline, "asr", "transcribe", samples / first["file"], "--json", "--device", "cpu")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["text"] == first["text"]


def test_the_installed_command_runs_a_short_demo(installed: Installed) -> None:
    done = installed.run(
        installed.hopline, "--log-level", "WARNING", "demo", "--sessions", "2", "--duration", "4", "--json",
        timeout_s=240.0,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    assert figures["sessions"] == 2 and figures["events"] > 0
    assert isinstance(figures["wer"], float) and 0.0 <= figures["wer"] <= 1.0
    assert figures["exit_codes"] == {"windower": 0, "worker": 0, "assembler": 0, "controller": 0}
