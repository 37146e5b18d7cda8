"""The `mitmllm` command: its subcommands, their exit status and output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mitmllm.cli import main
from mitmllm.script import SCRIPT

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "tests" / "configs" / "example.yaml"
BAD = ROOT / "tests" / "configs" / "bad-unknown-upstream.yaml"
RECORDING = ROOT / "tests" / "recordings" / "anthropic-keepalive-inside-tool-call.sse"


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("proxy", "web", "check", "config", "demo", "script"):
        assert f"    {command} " in out


def test_config_check_passes_a_good_file_and_names_the_field_of_a_bad_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["config", "check", str(EXAMPLE)]) == 0
    assert capsys.readouterr().out.startswith(f"{EXAMPLE}: ok")
    assert main(["config", "check", str(BAD)]) == 1
    err = capsys.readouterr().err
    assert f"{BAD}:17: routes.0.chain.1.upstream: unknown upstream" in err


def test_config_schema_is_the_configuration_s_json_schema(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"models", "upstreams", "routes"} <= set(schema["properties"])


def test_check_prints_findings_and_fails_on_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(RECORDING)]) == 1
    assert "SSE-18  error" in capsys.readouterr().out
    assert main(["check", "--json", str(RECORDING)]) == 1
    assert json.loads(capsys.readouterr().out)["exit_status"] == 1


def test_check_schema_and_missing_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "CheckReport"
    assert main(["check"]) == 2
    assert "name at least one file" in capsys.readouterr().err


def test_options_of_another_command_are_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["check", str(RECORDING), "--mode", "reverse:http://x"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --mode reverse:http://x" in capsys.readouterr().err


def test_demo_takes_its_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["demo", "--quick", "--out", str(blocker / "out")]) == 1
    assert "cannot create the output directory" in capsys.readouterr().err


def test_script_is_the_mitmproxy_script_of_the_package(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["script"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == SCRIPT and path.is_file()
    assert SCRIPT.read_text().count("script_addons()") == 1


def test_python_m_mitmllm_is_the_same_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mitmllm", "check", str(RECORDING)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1 and "SSE-18  error" in done.stdout
