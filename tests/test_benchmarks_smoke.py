"""A short pass of the benchmarks, so they keep working (numbers are not checked here)."""
from benchmarks.run import MINIMUM, concurrency, run, scale, table, throughput


def test_benchmarks_run_once():
    rows = run(1)
    assert {r["action"] for r in rows} == set(MINIMUM)
    assert all(r["linstor_requests"] >= r["min_requests"] for r in rows)
    assert "median_s" in table(rows)


def test_scale_throughput_concurrency_small():
    m = scale([50])
    assert [x["vms_reported"] for x in m if x["what"] == "tm/monitor"] == [50]
    t = throughput(16)
    assert {x["image"] for x in t} == {"raw", "qcow2"}
    c = concurrency(3)
    assert c["succeeded"] == 3
