"""`docsuper once`: its lines are for people: no `None`, and no JSON log record among them."""

from __future__ import annotations

from .daemon import Env


def test_once_says_only_what_was_measured_and_keeps_log_records_out_of_its_lines(env: Env):
    for passes, code in (("noop", 0), ("fail", 1)):
        [job_id] = env.submit(passes)
        result = env.cli("once", job_id, check=False)
        assert result.returncode == code, result.stderr
        shown = result.stdout + result.stderr
        assert "None" not in shown and " 0.0 MB" not in shown, shown
        assert not [ln for ln in shown.splitlines() if ln.lstrip().startswith("{")], shown
        assert "started" in result.stdout
        final = result.stdout if code == 0 else result.stderr
        assert ("succeeded: peak " if code == 0 else "error: peak ") in final, shown
