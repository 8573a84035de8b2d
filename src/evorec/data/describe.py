"""What is in a dataset of the store: counts, time span, lengths, quarantine by reason."""

from __future__ import annotations

from pathlib import Path

from evorec.data import store as store_mod

QUANTILES = (0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)


def describe_dataset(store: str | Path, dataset: str) -> dict:
    """Summary of one dataset. Keys: dataset, time_kind, pseudonymized, users, items, categories,
    events, rows_read, quarantined, quarantined_by_reason, time_min, time_max (ISO 8601),
    by_behavior, sequence_length (quantiles), ingests (one entry per source file), items_metadata,
    events_without_category (kept events that have none), events_without_item_metadata (of them,
    events whose item the items table lacks; None when the dataset has no item metadata),
    events_with_basket_id."""
    con = store_mod.connect(store, read_only=True)
    try:
        info = store_mod.require_dataset(con, dataset)
        users, items, cats, events, tmin, tmax = con.execute(
            "SELECT count(DISTINCT user_id), count(DISTINCT item_id), count(DISTINCT category_id), count(*), "
            "min(ts), max(ts) FROM events WHERE dataset = ?",
            [dataset],
        ).fetchall()[0]
        by_behavior = dict(
            con.execute(
                "SELECT behavior, count(*) FROM events WHERE dataset = ? GROUP BY 1 ORDER BY 2 DESC", [dataset]
            ).fetchall()
        )
        qs = ", ".join(f"quantile_disc(n, {q})" for q in QUANTILES)
        lengths = con.execute(
            f"SELECT {qs}, avg(n) FROM (SELECT count(*) AS n FROM events WHERE dataset = ? GROUP BY user_id)",
            [dataset],
        ).fetchall()[0]
        reasons = dict(
            con.execute(
                "SELECT split_part(reason, ':', 1), count(*) FROM quarantine WHERE dataset = ? GROUP BY 1 ORDER BY 2 DESC",
                [dataset],
            ).fetchall()
        )
        ingests = [
            dict(zip(("source_file", "format", "rows_read", "rows_ingested", "rows_quarantined", "finished_at"), r))
            for r in con.execute(
                "SELECT source_file, format, rows_read, rows_ingested, rows_quarantined, finished_at "
                "FROM ingests WHERE dataset = ? ORDER BY ingest_id",
                [dataset],
            ).fetchall()
        ]
        n_items_meta = con.execute("SELECT count(*) FROM items WHERE dataset = ?", [dataset]).fetchall()[0][0]
        n_profiles = (  # stores from before the users table (schema 3) have none
            con.execute("SELECT count(*) FROM users WHERE dataset = ?", [dataset]).fetchall()[0][0]
            if store_mod.table_columns(con, "users") else 0
        )
        basket = "e.basket_id" if "basket_id" in store_mod.event_columns(con) else "NULL"  # stores from before baskets
        no_cat, no_meta, with_basket = con.execute(
            f"SELECT count(*) FILTER (WHERE e.category_id IS NULL), count(*) FILTER (WHERE i.item_id IS NULL), "
            f"count({basket}) FROM events e LEFT JOIN (SELECT DISTINCT item_id FROM items WHERE dataset = $d) i "
            "ON i.item_id = e.item_id WHERE e.dataset = $d",
            {"d": dataset},
        ).fetchall()[0]
    finally:
        con.close()
    for ing in ingests:
        ing["finished_at"] = ing["finished_at"].isoformat() + "Z" if ing["finished_at"] else None
    ordinal = info["time_kind"] == "ordinal"
    return {
        "dataset": dataset,
        "time_kind": info["time_kind"],
        "pseudonymized": info["pseudonymized"],
        "users": users,
        "items": items,
        "categories": cats,
        "events": events,
        "rows_read": sum(i["rows_read"] for i in ingests),
        "quarantined": sum(reasons.values()),
        "quarantined_by_reason": reasons,
        "time_min": _iso(tmin, ordinal),
        "time_max": _iso(tmax, ordinal),
        "by_behavior": by_behavior,
        "sequence_length": (
            {f"q{int(q * 100)}": v for q, v in zip(QUANTILES, lengths[:-1])} | {"mean": lengths[-1]} if events else {}
        ),
        "items_metadata": n_items_meta,
        "events_without_category": int(no_cat or 0),
        "events_without_item_metadata": int(no_meta or 0) if n_items_meta else None,
        "events_with_basket_id": int(with_basket or 0),
        "user_profiles": int(n_profiles),
        "ingests": ingests,
    }


def _iso(ts, ordinal: bool) -> str | None:
    if ts is None:
        return None
    # Ordinal datasets keep positions as 1970-01-01 + n seconds (time_kind says so).
    return ts.isoformat() + "Z"
