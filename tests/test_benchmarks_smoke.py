"""A one-run pass of the benchmarks, so they keep working (numbers are not checked here)."""
from benchmarks.run import MINIMUM, run, table


def test_benchmarks_run_once():
    rows = run(1)
    assert {r["action"] for r in rows} == set(MINIMUM)
    assert all(r["linstor_requests"] >= r["min_requests"] for r in rows)
    assert "median_s" in table(rows)
