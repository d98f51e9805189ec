"""The source layout's rules (docs/layout.md), as scripts/imports.py reports them: no import
cycles (imports inside functions count), no module over 600 lines, only lab/ imports Mininet."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _report() -> dict[str, str]:
    out = subprocess.run([sys.executable, str(ROOT / "scripts/imports.py"), str(ROOT / "src/vclab")],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line and not line.startswith(" "))


def test_no_import_cycles():
    assert _report()["cycles (strongly connected groups)"] == "0"


def test_no_module_over_600_lines():
    assert ast.literal_eval(_report()["over 600 lines"]) == []


def test_only_the_lab_imports_mininet():
    importers = ast.literal_eval(_report()["mininet importers"])
    assert importers and all(m.startswith("vclab.lab.") for m in importers)
