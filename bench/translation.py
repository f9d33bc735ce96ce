"""Translation: normalized events per second through parse + mapping, per source, in one process.

For each source: `Source.parse(body, headers, hint)` then `bridge.mapping.translate(mapping, event)`
(plus `render_comment` for comment events: that is the mapping's work for them), with the shipped
mapping file of the source (mappings/<source>.yaml). Baseline, same bodies, same run: `json.loads`.

Bodies: GitHub: ~5 KB deliveries built with testkit/factories.py (opened, edited, labeled, closed,
comment created) plus the real-world corpus in ../shared/fixtures/github when present; Bugzilla and
BugHerd: their corpus in ../shared/fixtures (skipped, with a note, when the source module or the
corpus is missing). Deliveries a source ignores (ping, pull-request comments, attachments) are left out.

    .venv/bin/python bench/translation.py [--quick] [--events N]

Target: >= 20,000 events/s per source.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import FIXTURES, REPO, padded_issue_payload, print_header, verdict, write_json
from bridge.events import IgnoredEvent, NormalizedEvent
from bridge.mapping import load_mapping, render_comment, translate
from bridge.mapping.model import Mapping
from bridge.sources import KNOWN_FIELDS
from testkit.factories import comment_event

TARGET = 20_000.0


@dataclass
class Delivery:
    name: str
    body: bytes
    headers: dict[str, str]
    hint: str | None = None


@dataclass
class Case:
    source: str
    parse: Callable[[bytes, dict[str, str], str | None], NormalizedEvent]
    mapping: Mapping
    deliveries: list[Delivery]


# -- the deliveries ---------------------------------------------------------------------------------------


def github_factory_deliveries() -> list[Delivery]:
    headers = {"Content-Type": "application/json"}
    out = []
    for i, (action, kwargs) in enumerate(
        [
            ("opened", {}),
            ("edited", {"title": "Login button does nothing on Safari"}),
            ("labeled", {"labels": ("bug", "severity:critical", "area:auth")}),
            ("closed", {}),
        ]
    ):
        payload = padded_issue_payload(100 + i, action=action, updated=60.0 * i, **kwargs)
        out.append(
            Delivery(f"factory issues.{action}", json.dumps(payload).encode(), {**headers, "X-GitHub-Event": "issues"})
        )
    comment = comment_event("created", comment_id=9001, text="Still broken on 17.2. " * 60, commented=30.0, number=7)
    out.append(
        Delivery(
            "factory issue_comment.created",
            json.dumps(comment).encode(),
            {**headers, "X-GitHub-Event": "issue_comment"},
        )
    )
    return out


def github_corpus_deliveries() -> list[Delivery]:
    corpus = FIXTURES / "github"
    out = []
    for path in sorted(corpus.glob("*.json")) if corpus.is_dir() else []:
        event = path.name.split(".", 1)[0]
        headers = {"Content-Type": "application/json", "X-GitHub-Event": event}
        out.append(Delivery(f"corpus {path.name}", path.read_bytes(), headers))
    return out


def corpus_deliveries(source: str, hint_from_name: bool) -> list[Delivery]:
    folder = FIXTURES / source
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        hint = path.name.split(".", 1)[0] if hint_from_name else None
        out.append(Delivery(f"corpus {path.name}", path.read_bytes(), {"Content-Type": "application/json"}, hint))
    return out


def cases(notes: list[str]) -> list[Case]:
    from bridge.sources.github.webhook import GitHubSource

    def mapping(source: str) -> Mapping:
        return load_mapping(REPO / "mappings" / "examples" / f"{source}.yaml", known_fields=KNOWN_FIELDS)

    github = GitHubSource("bench-secret").parse
    out = [Case("github ~5KB", github, mapping("github"), github_factory_deliveries())]
    if (FIXTURES / "github").is_dir():
        out.append(Case("github corpus", github, mapping("github"), github_corpus_deliveries()))
    else:
        notes.append(f"github corpus: skipped, {FIXTURES / 'github'} does not exist")
    sources_dir = REPO / "bridge" / "sources"
    if (sources_dir / "bugzilla.py").exists():
        from bridge.sources.bugzilla.webhook import BugzillaSource

        bugzilla = BugzillaSource("bench-secret", bugzilla_url="https://bugzilla.example.com")
        out.append(Case("bugzilla", bugzilla.parse, mapping("bugzilla"), corpus_deliveries("bugzilla", False)))
    else:
        notes.append("bugzilla: skipped, bridge/sources/bugzilla.py does not exist")
    if (sources_dir / "bugherd.py").exists():
        from bridge.sources.bugherd.webhook import BugHerdSource

        bugherd = BugHerdSource("bench-token")
        out.append(Case("bugherd", bugherd.parse, mapping("bugherd"), corpus_deliveries("bugherd", True)))
    else:
        notes.append("bugherd: skipped, bridge/sources/bugherd.py does not exist")
    return out


# -- timing -----------------------------------------------------------------------------------------------


def map_event(mapping: Mapping, event: NormalizedEvent) -> Any:
    draft = translate(mapping, event)
    return render_comment(mapping, event) if event.comment is not None else draft


def usable(case: Case, notes: list[str]) -> list[Delivery]:
    """The deliveries the source turns into an event the mapping translates; the others get a note."""
    kept = []
    for d in case.deliveries:
        try:
            map_event(case.mapping, case.parse(d.body, d.headers, d.hint))
        except IgnoredEvent as exc:
            notes.append(f"{case.source}: {d.name} left out (ignored by the source: {exc.reason})")
            continue
        except Exception as exc:  # a corpus file the source or mapping refuses: report it, time the rest
            notes.append(f"{case.source}: {d.name} left out ({type(exc).__name__}: {exc})")
            continue
        kept.append(d)
    return kept


def best_rate(fn: Callable[[], int], repeats: int) -> float:
    """Items per second of the fastest of `repeats` runs of `fn` (which returns how many it did)."""
    best = 0.0
    for _ in range(repeats):
        gc.collect()
        started = time.perf_counter()
        done = fn()
        best = max(best, done / (time.perf_counter() - started))
    return best


def time_case(case: Case, deliveries: list[Delivery], events: int, repeats: int) -> dict[str, Any]:
    work = (deliveries * (events // len(deliveries) + 1))[:events]
    parse, mapping = case.parse, case.mapping
    parsed = [parse(d.body, d.headers, d.hint) for d in work]

    def baseline() -> int:
        for d in work:
            json.loads(d.body)
        return len(work)

    def parse_only() -> int:
        for d in work:
            parse(d.body, d.headers, d.hint)
        return len(work)

    def map_only() -> int:
        for event in parsed:
            map_event(mapping, event)
        return len(parsed)

    def parse_and_map() -> int:
        for d in work:
            map_event(mapping, parse(d.body, d.headers, d.hint))
        return len(work)

    result = {
        "source": case.source,
        "deliveries": len(deliveries),
        "mean_body_bytes": round(sum(len(d.body) for d in deliveries) / len(deliveries)),
        "json_loads_per_s": best_rate(baseline, repeats),
        "parse_per_s": best_rate(parse_only, repeats),
        "map_per_s": best_rate(map_only, repeats),
        "parse_map_per_s": best_rate(parse_and_map, repeats),
    }
    result["ratio_to_json_loads"] = result["parse_map_per_s"] / result["json_loads_per_s"]
    result["met"] = result["parse_map_per_s"] >= TARGET
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer events and repeats (~10 s)")
    parser.add_argument("--events", type=int, default=None, help="events per timed run (default 20,000)")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    events = args.events or (5_000 if args.quick else 20_000)
    repeats = 3 if args.quick else 5
    info = print_header("translation: parse + mapping per source, one process")
    print(f"   {events} events per timed run, best of {repeats} runs; baseline json.loads of the same bodies")
    notes: list[str] = []
    results = []
    print(
        f"   {'source':<14} {'bodies':>6} {'avg B':>6} | {'json.loads/s':>12} | {'parse/s':>9} {'map/s':>9} |"
        f" {'parse+map/s':>11} {'µs/event':>8} {'vs loads':>8}"
    )
    for case in cases(notes):
        deliveries = usable(case, notes)
        if not deliveries:
            notes.append(f"{case.source}: no usable delivery: not timed")
            continue
        r = time_case(case, deliveries, events, repeats)
        results.append(r)
        print(
            f"   {r['source']:<14} {r['deliveries']:>6} {r['mean_body_bytes']:>6} | {r['json_loads_per_s']:>12,.0f} |"
            f" {r['parse_per_s']:>9,.0f} {r['map_per_s']:>9,.0f} | {r['parse_map_per_s']:>11,.0f}"
            f" {1e6 / r['parse_map_per_s']:>8.1f} {r['ratio_to_json_loads']:>8.2f}"
            f"  [>= {TARGET:,.0f}/s: {verdict(r['met'])}]"
        )
    for note in notes:
        print(f"   note: {note}")
    write_json(args.json, {"machine": info, "events": events, "results": results, "notes": notes})


if __name__ == "__main__":
    main()
