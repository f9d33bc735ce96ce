"""What `mappings check` adds for `backlink:` / `reverse:`: a missing source token, unknown Zoho statuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge.mapping import MappingError, MappingProblem, load_mapping
from bridge.settings import Settings
from bridge.sources.writers import missing_credential
from bridge.targets.zoho.client import normalize_name


def talkback_problems(
    files: list[Path], settings: Settings | None, zoho_options: dict[Any, Any] | None
) -> list[MappingProblem]:
    from bridge.sources import KNOWN_FIELDS

    problems: list[MappingProblem] = []
    for file in files:
        try:
            mapping = load_mapping(file, known_fields=KNOWN_FIELDS)
        except MappingError:
            continue  # its own problems are reported already
        if mapping.backlink is None and mapping.reverse is None:
            continue
        key = "backlink" if mapping.backlink is not None else "reverse"
        if settings is not None and (missing := missing_credential(mapping.source, settings)):
            problems.append(MappingProblem(str(file), None, key, missing))
        if mapping.reverse is None or not zoho_options:
            continue
        projects = [mapping.routing.default_project, *dict(mapping.routing.by_source_project).values()]
        for name, _actions in mapping.reverse.status:
            for project in {p for p in projects if p}:
                valid = (zoho_options.get((mapping.routing.portal, project)) or {}).get("status")
                if valid and normalize_name(name) not in {normalize_name(v) for v in valid}:
                    problems.append(
                        MappingProblem(
                            str(file),
                            None,
                            "reverse.status",
                            f"{name!r} is not a status of Zoho project {project} (known: {', '.join(valid)})",
                        )
                    )
    return problems
