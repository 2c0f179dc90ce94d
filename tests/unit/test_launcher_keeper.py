"""The launcher's lifecycle: a launcher that fails is replaced after a delay that doubles while they keep dying."""

from __future__ import annotations

import io
import json

from docsuper.supervisor.launcher import SERVER_EXITED, Reports
from docsuper.supervisor.launcher_keeper import MAX_RESTART_DELAY_S, RESTART_DELAY_S, LauncherKeeper
from docsuper.supervisor.logs import Logger
from docsuper.supervisor.protocol import Ready


class FakeLauncher:
    """What the keeper uses of a launcher; the real ones are tested in tests/test_supervisor.py."""

    name = "forkserver"

    def __init__(self) -> None:
        self.problem: str | None = None
        self.unstarted = ["queued-job"]
        self.kills = 0
        self.begun = 0

    def start(self) -> Ready:
        return Ready(pid=1, preloaded=["ocr"], failed={})

    def begin_start(self) -> Ready | None:
        self.begun += 1
        return None  # the Ready comes through poll()

    def check(self, now: float) -> str | None:
        return self.problem

    def kill(self) -> list[str]:
        self.kills += 1
        return self.unstarted

    def poll(self) -> Reports:
        return Reports()


def keeper_for(launcher: FakeLauncher, stopping: list[bool]) -> tuple[LauncherKeeper, list[object], io.StringIO]:
    out = io.StringIO()
    told: list[object] = []
    keeper = LauncherKeeper(launcher, Logger("info", "json", out), lambda: stopping[0],  # type: ignore[arg-type]
                            told.append, lambda unstarted, reason: told.append((unstarted, reason)))
    return keeper, told, out


def test_a_failed_launcher_is_replaced_after_a_delay_that_doubles_until_one_is_ready():
    launcher = FakeLauncher()
    keeper, told, out = keeper_for(launcher, [False])
    keeper.start()
    assert keeper.up and isinstance(told[0], Ready)
    launcher.problem = "the fork server stopped answering"
    keeper.check(0.0)
    assert not keeper.up and keeper.killed and told[1] == ({"queued-job"}, "the fork server stopped answering")
    assert keeper.restart_at is not None and keeper.restart_delay == 2 * RESTART_DELAY_S
    keeper.restart(keeper.restart_at - 0.01)
    assert launcher.begun == 0
    keeper.restart(keeper.restart_at)
    assert launcher.begun == 1 and keeper.restart_at is None and not keeper.killed and not keeper.up
    for _ in range(10):
        keeper.replace("it died at once")
    assert keeper.restart_delay == MAX_RESTART_DELAY_S
    keeper.ready(Ready(pid=2, preloaded=["ocr"], failed={"cv2": "no module"}))
    assert keeper.up and keeper.restart_delay == RESTART_DELAY_S
    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events == ["launcher_replaced"] * 11 + ["preload_incomplete"]


def test_a_server_that_exits_with_the_shutdown_is_released_not_replaced():
    launcher = FakeLauncher()
    keeper, told, out = keeper_for(launcher, [True])
    keeper.start()
    launcher.problem = SERVER_EXITED
    keeper.check(0.0)
    assert keeper.killed and not keeper.up and keeper.restart_at is None
    keeper.restart(1e9)
    assert launcher.begun == 0
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["launcher_exited"]
