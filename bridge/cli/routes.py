"""Routes checked against Zoho: every portal and project a mapping file names must exist for the configured
credentials (`mappings check`, and `issue-bridge run` before it starts anything in live mode)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.mapping import MappingError, MappingProblem, load_mapping
from bridge.mapping.loader import ZohoRoutes, route_problems
from bridge.sources import KNOWN_FIELDS

if TYPE_CHECKING:
    from bridge.targets.zoho.client import ZohoClient


def portal_ids(portal: dict[str, Any]) -> list[str]:
    """Every id a portal answer gives it: v3 shows `id` / `id_string`, the documented sample only `zsoid`
    (seed 001:779); a mapping may name the portal by any of them."""
    return [str(portal[k]) for k in ("id", "id_string", "zsoid") if portal.get(k) not in (None, "")]


def mapped_portals(files: Iterable[Path]) -> list[str]:
    portals: list[str] = []
    for file in files:
        try:
            mapping = load_mapping(file, known_fields=KNOWN_FIELDS)
        except MappingError:
            continue
        if mapping.routing.portal not in portals:
            portals.append(mapping.routing.portal)
    return portals


def known_routes(client: ZohoClient, wanted: Iterable[str]) -> ZohoRoutes:
    """{portal id: {project id: name}} for the portals in `wanted` that Zoho lists; the other portals Zoho
    lists appear with no projects (so a message can name them). One call for portals, one list per portal."""
    wanted = set(wanted)
    known: dict[str, dict[str, str]] = {}
    for portal in client.portals():
        ids = portal_ids(portal)
        if not ids:
            continue
        projects: dict[str, str] = {}
        if wanted.intersection(ids):
            projects = {str(p.get("id")): str(p.get("name") or "") for p in client.projects(ids[0]) if p.get("id")}
        for pid in ids:
            known[pid] = projects
    return known


def check_routes(client: ZohoClient, files: list[Path]) -> list[MappingProblem]:
    """Problems (file:line) for every route to a portal or project Zoho does not know. Raises ZohoError when
    Zoho cannot be asked."""
    known = known_routes(client, mapped_portals(files))
    return [problem for file in files for problem in route_problems(file, known)]
