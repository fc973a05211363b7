"""The demo is the end-to-end acceptance: every step whose driver actions exist must succeed."""
import io

from lab.demo import run_demo


def test_demo_lifecycle():
    out = io.StringIO()
    rows = run_demo(out)
    bad = [r for r in rows if r.result.startswith(("FAILED", "ERROR"))]
    assert not bad, out.getvalue()
    for row in rows:
        assert row.result.startswith(("ok", "not implemented", "skipped")), out.getvalue()
