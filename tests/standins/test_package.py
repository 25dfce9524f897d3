"""The stand-ins stand apart from the product: they load without it, from any folder."""
from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import standins

ROOT = Path(__file__).resolve().parents[2]


def test_every_stand_in_loads_without_any_of_the_hub_s_packages(tmp_path):
    modules = [f"standins.{m.name}" for m in pkgutil.iter_modules(standins.__path__)]
    # A stand-in that used the hub's code would agree with the hub's bugs.
    check = (f"import importlib, json, sys; [importlib.import_module(m) for m in {modules!r}]; "
             "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('hub', 'connectors', 'webhooks', 'mappings', 'worker'))))")
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=tmp_path,
                            env={"PYTHONPATH": str(ROOT), "PATH": ""}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(modules) >= 12, modules
    assert json.loads(result.stdout) == []
