"""Row-by-row comparison of a recovered output with the clean run's output."""

from __future__ import annotations

from collections import Counter

from chispa import assert_df_equality


def assert_same_rows(spark, recovered_df, clean_rows) -> None:
    """Recovered == clean, row for row: zero duplicates, zero missing, zero extra."""
    got = Counter(tuple(r) for r in recovered_df.collect())
    want = Counter(tuple(r) for r in clean_rows)
    duplicates = sum(n - want.get(row, 0) for row, n in got.items() if n > want.get(row, 0) and row in want)
    missing = sum(n - got.get(row, 0) for row, n in want.items() if n > got.get(row, 0))
    extra = sum(n for row, n in got.items() if row not in want)
    assert (duplicates, missing, extra) == (0, 0, 0), \
        f"duplicates={duplicates} missing={missing} extra={extra}"
    clean_df = spark.createDataFrame(clean_rows, recovered_df.schema)
    assert_df_equality(recovered_df, clean_df, ignore_row_order=True)
