"""Every GitHub delivery looks its issue's identity up (bridge/store/deliveries.py). On PostgreSQL that lookup must
use the primary key whatever the table's statistics: a server with autovacuum off never analyzes the table, and a
lookup that reads every binding of the source costs each delivery more as issues accumulate (docs/benchmarks.md)."""

from __future__ import annotations

from sqlalchemy import text

from testkit.dbs import fresh_engine

IDENTITIES = 3000


def test_the_identity_lookup_uses_the_identity_without_statistics(tmp_path):
    engine_gen = fresh_engine("postgresql", tmp_path)
    engine = next(engine_gen)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO item_identities (source, identity, item_key, created_at) "
                    "SELECT 'github', CAST(g AS VARCHAR), 'acme/web#' || g, 0 FROM generate_series(1, :n) AS g"
                ),
                {"n": IDENTITIES},
            )
            analyzed = conn.execute(
                text("SELECT reltuples FROM pg_class WHERE relname = 'item_identities'")
            ).scalar_one()
            assert analyzed < 0  # never analyzed: the planner has no statistics, as with autovacuum off
            plan = "\n".join(
                row[0]
                for row in conn.execute(
                    text(
                        "EXPLAIN ANALYZE SELECT item_key FROM item_identities "
                        "WHERE source = 'github' AND identity = '1500'"
                    )
                )
            )
        assert "Rows Removed by Filter" not in plan, plan
        assert "identity" in next(line for line in plan.splitlines() if "Index Cond" in line), plan
    finally:
        engine_gen.close()
