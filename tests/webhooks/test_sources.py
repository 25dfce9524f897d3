"""The platform registry: one declared Source per package, below the pipeline's layers."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from webhooks import SOURCES, Source, get_source
from webhooks.stripe import webhook as stripe_webhook

ROOT = Path(__file__).resolve().parents[2]

# Every module of the platform packages, imported together in a fresh interpreter: what
# they load of the hub must be vocabulary and models only (the layer rule of docs/architecture.md).
WALK = """
import importlib, pkgutil, sys
import webhooks
for found in pkgutil.walk_packages(webhooks.__path__, "webhooks."):
    importlib.import_module(found.name)
above = sorted(m for m in sys.modules if m.split(".")[:2] in (["hub", "sync"], ["hub", "ops"],
                                                               ["hub", "web"], ["hub", "commands"]))
print("\\n".join(above))
"""


def test_platform_modules_import_nothing_of_the_pipeline_or_above():
    done = subprocess.run([sys.executable, "-c", WALK], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == []


def test_each_platform_is_declared_once_with_what_backfill_and_links_need():
    assert list(SOURCES) == ["shopify", "stripe", "chargebee", "recharge"]
    for name, source in SOURCES.items():
        assert get_source(name) is source and source.topics
    for name in ("shopify", "stripe", "chargebee"):
        assert SOURCES[name].lister.source == name
        assert SOURCES[name].customer_page and SOURCES[name].page_name
    assert get_source("stripe").topics is stripe_webhook.TOPICS
    assert {n for n, s in SOURCES.items() if s.retry_payment} == {"shopify", "stripe", "chargebee"}
    assert {n for n, s in SOURCES.items() if s.item_products} == {"shopify"}


def test_a_customer_page_without_saying_when_it_can_be_made_is_refused():
    stripe = SOURCES["stripe"]
    with pytest.raises(ValueError, match="customer_page, linkable and page_name go together"):
        Source(name="recharge", secret_settings=(), verify=stripe.verify, describe=stripe.describe,
               topics={}, customer_page=stripe.customer_page)
