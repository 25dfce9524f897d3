"""Commands of `hub` that live beside their own area (install, backfill, demo, staff users…).

Each module here defines one click command or group named `command`; hub.cli adds
every module listed in COMMANDS.
"""

COMMANDS = ("user", "install", "demo", "backfill", "reconcile")
