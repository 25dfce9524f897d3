"""Every module imports on its own: no order of imports is needed for any of them.

An import written at the top that closes a cycle fails only when the cycle is entered at
the wrong module, so each module is imported with every project module forgotten first.
One interpreter runs them all (a fresh one per module would take a minute); third-party
packages stay loaded, which hides nothing: cycles are between the project's own modules.
"""
from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
PACKAGES = ("hub", "connectors", "webhooks", "standins")

IMPORT_EACH = """
import importlib, sys, traceback
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m.split(".")[0] in {packages!r}]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ":\\n" + traceback.format_exc(limit=-3))
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def project_modules() -> list[str]:
    names = []
    for package in PACKAGES:
        if not (PROJECT / package / "__init__.py").exists():
            continue
        names.append(package)
        names += [m.name for m in pkgutil.walk_packages([str(PROJECT / package)], prefix=f"{package}.")]
    return names


def test_every_module_imports_alone():
    modules = project_modules()
    assert "hub.sync.inbox" in modules and "connectors.klaviyo" in modules
    run = subprocess.run([sys.executable, "-c", IMPORT_EACH.format(packages=set(PACKAGES)), *modules],
                         cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"modules that do not import alone:\n{run.stdout}{run.stderr[-2000:]}"
