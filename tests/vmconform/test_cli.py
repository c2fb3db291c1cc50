"""The vmconform command line: check, list, replay and fuzz, end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from vmconform.cli import main, parse_duration


def mutant_for(target: str) -> str:
    """The import path of a mutant in tests/mutants/buddy.py that breaks ``target``."""
    from tests.mutants import buddy as mutants

    for name, obj in vars(mutants).items():
        if isinstance(obj, type) and getattr(obj, "target", None) == target:
            return f"tests.mutants.buddy:{name}"
    pytest.skip(f"no mutant targets {target}")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed entry point the way a user would."""
    return subprocess.run([sys.executable, "-m", "vmconform", *args], capture_output=True,
                          text=True, check=False, cwd=Path(__file__).resolve().parents[2])


def test_list_shows_builtins_and_checks():
    """`vmconform list` names both built-in implementations and the checks of every
    subsystem."""
    result = CliRunner().invoke(main, ["list"])
    assert 0 == result.exit_code
    for expected in ("refmodel", "fastmodel", "BUDDY-I1", "BUDDY-R14", "PAGETABLE-I1",
                     "TLB-I1", "VMA-I1", "SLUB-I1", "FAULT-I1", "OOM-I1", "tiny",
                     "large"):
        assert expected in result.output


#: One mutant per subsystem other than buddy, whose reproducer must replay through the
#: generic trace (handles recorded by id, rules called as do_<rule>).
OTHER_SUBSYSTEM_MUTANTS = {
    "pagetable": "PAGETABLE-I3", "tlb": "TLB-I1", "vma": "VMA-I1", "slub": "SLUB-I1",
    "fault": "FAULT-I1", "oom": "OOM-R4"}


def mutant_of(subsystem: str, target: str) -> str:
    """The import path of a mutant in tests/mutants/<subsystem>.py that breaks ``target``."""
    import importlib

    module = importlib.import_module(f"tests.mutants.{subsystem}")
    for name, obj in vars(module).items():
        if isinstance(obj, type) and getattr(obj, "target", None) == target:
            return f"tests.mutants.{subsystem}:{name}"
    pytest.skip(f"no mutant targets {target}")


@pytest.mark.parametrize("subsystem", sorted(OTHER_SUBSYSTEM_MUTANTS))
def test_reproducer_replays_in_every_subsystem(subsystem, tmp_path):
    """`vmconform check <subsystem>` on a mutant fails with a shrunk reproducer that
    `vmconform replay` runs to the same failure."""
    target = OTHER_SUBSYSTEM_MUTANTS[subsystem]
    result = run_cli("check", subsystem, "--impl", mutant_of(subsystem, target), "--mode",
                     "contract", "--reproducers", str(tmp_path))
    assert 1 == result.returncode, result.stdout + result.stderr
    reproducers = sorted(tmp_path.glob(f"*{target}*.py"))
    assert 1 == len(reproducers), result.stdout
    replayed = run_cli("replay", str(reproducers[0]))
    assert 1 == replayed.returncode, replayed.stdout + replayed.stderr
    assert f"FAIL {target}" in replayed.stdout


def test_oracle_command_agrees_with_the_host():
    """`vmconform oracle vma` runs sequences on the running kernel and on the model."""
    result = run_cli("oracle", "vma", "--impl", "fastmodel", "--examples", "20")
    assert 0 == result.returncode, result.stdout + result.stderr
    assert "no divergence" in result.stdout


def test_check_refmodel_passes():
    """`vmconform check --impl refmodel` passes every check and exits 0."""
    result = run_cli("check", "--impl", "refmodel", "--examples", "10")
    assert 0 == result.returncode, result.stdout + result.stderr
    assert "0 failed" in result.stdout


def test_check_default_is_fastmodel():
    """With no arguments `vmconform check` checks the bundled fastmodel and passes."""
    result = run_cli("check", "--examples", "10")
    assert 0 == result.returncode, result.stdout + result.stderr
    assert "fastmodel" in result.stdout


def test_check_mutant_fails_with_reproducer(tmp_path):
    """A broken allocator fails, exit status 1, and its reproducer replays the failure."""
    impl = mutant_for("BUDDY-I5")
    result = run_cli("check", "--impl", impl, "--mode", "contract", "--reproducers",
                     str(tmp_path), "--json", str(tmp_path / "report.json"))
    assert 1 == result.returncode, result.stdout + result.stderr
    assert "BUDDY-I5" in result.stdout
    assert "seed 0" in result.stdout
    reports = json.loads((tmp_path / "report.json").read_text())
    failed = {r["id"] for r in reports[0]["results"] if r["status"] == "fail"}
    assert "BUDDY-I5" in failed
    reproducers = sorted(tmp_path.glob("*BUDDY-I5*.py"))
    assert 1 == len(reproducers)
    replayed = run_cli("replay", str(reproducers[0]))
    assert 1 == replayed.returncode, replayed.stdout + replayed.stderr
    assert "FAIL BUDDY-I5" in replayed.stdout
    as_script = subprocess.run([sys.executable, str(reproducers[0])], capture_output=True,
                               text=True, check=False, cwd=Path(__file__).resolve().parents[2])
    assert 1 == as_script.returncode
    assert "BUDDY-I5" in as_script.stdout


def test_fuzz_finds_a_mutant_within_budget(tmp_path):
    """`vmconform fuzz` on a broken allocator reports the failure and writes a reproducer."""
    impl = mutant_for("BUDDY-I5")
    result = run_cli("fuzz", "buddy", "--impl", impl, "--mode", "contract", "--time", "20s",
                     "--seed", "1", "--chunk", "20", "--out", str(tmp_path))
    assert 1 == result.returncode, result.stdout + result.stderr
    assert list(tmp_path.glob("*.py"))


def test_invalid_unknown_impl_is_a_plugin_failure():
    """An implementation that cannot be found is reported, not a traceback."""
    result = run_cli("check", "--impl", "no.such.module:Factory")
    assert 1 == result.returncode
    assert "PLUGIN" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("30s", 30), ("10m", 600),
                                               ("2h", 7200), ("1.5m", 90)])
def test_parse_duration(text, seconds):
    """Durations accept s, m and h suffixes."""
    assert seconds == parse_duration(text)


def test_invalid_duration():
    """A malformed duration is a usage error."""
    with pytest.raises(Exception, match="not a duration"):
        parse_duration("ten minutes")
