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


def test_a_replay_that_fails_leaves_a_succeeded_job_as_it_was(env: Env):
    # What once did to a job whose file was deleted since: turned it dead, and counted the replay
    # (attempt 4/3). A replay under a lower memory cap fails the same way, with no file to delete.
    env.set(DOCSUPER_WORKERS_PRELOAD="json")
    # Held for a second: the watchdog samples every 0.1 s, and a child that only passes 20 MB on
    # its way to 60 and exits is over the cap for about that long (one replay was caught at 20.4 MB).
    [job_id] = env.submit("alloc", alloc_mb=60, hold_s=1)
    env.drain()
    with env.queue() as q:
        before = q.get(job_id)
    assert before.status == "succeeded" and before.attempts == 1
    for _ in range(3):
        env.set(DOCSUPER_MEMORY_JOB_LIMIT_MB="20", DOCSUPER_MEMORY_KERNEL_LIMIT_MB="0")
        result = env.cli("once", job_id, check=False)
        assert result.returncode == 1 and "job is now succeeded" in result.stderr, result.stdout + result.stderr
        header = result.stdout.splitlines()[0]
        assert "replay, not counted (the job stays succeeded)" in header and "/3" not in header, header
    with env.queue() as q:
        assert q.get(job_id) == before  # state, attempts, result
        attempts = q.attempts(job_id)
    assert [(a.counted, a.replay) for a in attempts] == [(True, False)] + [(False, True)] * 3
    assert all(a.outcome == "oom" for a in attempts[1:])
