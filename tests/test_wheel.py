"""The wheel gives a user everything without a checkout.

The project is built into a wheel and installed into a fresh virtual environment, offline (the
dependencies come from uv's cache at the versions of the project's lock); then the installed
`mitmllm` command runs from a folder outside the checkout: the console command, the mitmproxy
script, `check`, `config check`, and the demo with its mock upstreams and the SDKs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
RECORDING = ROOT / "tests" / "recordings" / "anthropic-keepalive-inside-tool-call.sse"
EXAMPLE = ROOT / "tests" / "configs" / "example.yaml"

pytestmark = pytest.mark.timeout(300)


def uv() -> str:
    found = os.environ.get("UV") or shutil.which("uv")
    assert found, "uv is needed to build and install the wheel (the project is run with uv)"
    return found


def sh(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the wheel, the fresh environment it is installed in)."""
    tmp = tmp_path_factory.mktemp("wheel")
    sh(uv(), "build", "--wheel", "--offline", "--out-dir", tmp / "dist", cwd=ROOT)
    (wheel,) = (tmp / "dist").glob("mitmllm-*.whl")
    venv = tmp / "venv"
    # The locked dependencies, without the project's development group and not editable ...
    sh(
        uv(), "sync", "--offline", "--no-dev", "--no-editable", "--quiet",
        cwd=ROOT, env={"UV_PROJECT_ENVIRONMENT": str(venv)},
    )  # fmt: skip
    # ... then mitmllm itself from the wheel just built.
    python = venv / "bin" / "python"
    sh(uv(), "pip", "install", "--offline", "--no-deps", "--reinstall", "--quiet",
       "--python", python, wheel, cwd=ROOT)  # fmt: skip
    return wheel, venv


def test_the_wheel_carries_the_command_the_script_the_demo_and_the_license(
    installed: tuple[Path, Path],
) -> None:
    wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    for part in (
        "mitmllm/script/mitmllm_addon.py",
        "mitmllm/cli/__init__.py",
        "mitmllm/demo/__main__.py",
        "mitmllm/mock/upstream.py",
    ):
        assert part in names, part
    dist = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    assert f"{dist}/licenses/LICENSE" in names
    meta = zipfile.ZipFile(wheel).read(f"{dist}/METADATA").decode()
    assert "License-Expression: MIT" in meta
    entry = zipfile.ZipFile(wheel).read(f"{dist}/entry_points.txt").decode()
    assert "mitmllm = mitmllm.cli:main" in entry


def test_the_installed_command_works_outside_the_checkout(
    installed: tuple[Path, Path], tmp_path: Path
) -> None:
    _, venv = installed
    mitmllm = venv / "bin" / "mitmllm"
    script = Path(sh(mitmllm, "script", cwd=tmp_path).strip())
    assert script.is_file() and venv in script.parents, "the script comes from the install"
    out = sh(venv / "bin" / "python", "-c", "import mitmllm; print(mitmllm.__file__)", cwd=tmp_path)
    assert venv in Path(out.strip()).parents, "nothing is read from the checkout"
    recording = tmp_path / RECORDING.name
    recording.write_bytes(RECORDING.read_bytes())
    done = subprocess.run(
        [mitmllm, "check", recording.name], cwd=tmp_path, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1 and "SSE-18  error" in done.stdout
    assert sh(mitmllm, "config", "check", EXAMPLE, cwd=tmp_path).startswith(f"{EXAMPLE}: ok")


def test_the_installed_demo_runs_with_its_mock_upstreams(
    installed: tuple[Path, Path], tmp_path: Path
) -> None:
    _, venv = installed
    out = sh(venv / "bin" / "mitmllm", "demo", "--quick", "--out", "out", cwd=tmp_path)
    assert " scenarios in " in out and "answered by the fallback" in out
    assert "mitmllm web --rfile out/flows.mitm" in out.splitlines()[-1]
    assert (tmp_path / "out" / "flows.mitm").stat().st_size > 0
