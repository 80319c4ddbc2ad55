"""The GPU signal at the NVML boundary (a fake ``pynvml``): the whole interval, per GPU."""

from __future__ import annotations

import time

from wd_support import LiveLog, Runner

BASE = ("--dry-run", "--check-interval", "0.5", "--idle-limit", "3", "--min-runtime", "0")


def test_bursts_between_checks_keep_the_pod(cli: Runner) -> None:
    """GPU work in bursts with CPU gaps: 0 % at each check's instant, 90 % in between."""
    env = cli.fake_nvml([{"base": 0}])
    live = LiveLog(cli.start(*BASE, "--state-file", str(cli.tmp / "s.json"), env=env))
    bursts: list[list[float]] = []
    seen = 0
    deadline = time.time() + 30
    while live.text.count("Signals:") < 6 and time.time() < deadline:
        if live.text.count("Signals:") > seen:  # a check just ran: a 0.2 s burst before the next one
            seen = live.text.count("Signals:")
            now = time.time()
            bursts.append([now + 0.1, now + 0.3, 90])
            cli.fake_nvml([{"base": 0, "bursts": bursts}])
        time.sleep(0.02)
    text = live.text
    assert "would stop" not in text, text
    assert text.count("GPU utilization: 90%") >= 4, text
    assert "idle (3/3)" not in text
    # Bursts end: now the idle checks count, and the (dry-run) stop comes.
    live.wait_for("[dry-run] would stop pod", timeout=20)
    err = live.finish()
    assert err.rindex("GPU utilization: 90%") < err.rindex("idle (1/3)")


def test_one_lost_gpu_is_unknown_alone(cli: Runner) -> None:
    """gpu1 is lost: gpu0's work still counts; idle gpu0 + lost gpu1 is unknown until the grace ends."""
    now = time.time()
    env = cli.fake_nvml([{"base": 0, "bursts": [[now, now + 600, 80]]}, {"lost": True}])
    live = LiveLog(cli.start(*BASE, "--unknown-grace", "1", "--state-file", str(cli.tmp / "s.json"), env=env))
    live.wait_for(lambda t: t.count("Work detected (gpu)") >= 2)
    assert "GPU utilization: 80%" in live.text
    cli.fake_nvml([{"base": 0}, {"lost": True}])
    live.wait_for("Signal unavailable (gpu: NVML: 0%; unreadable gpu1: NVML error: GPU is lost)")
    live.wait_for("ERROR - Signal gpu1 unknown for")
    live.wait_for("[dry-run] would stop")
    err = live.finish()
    drop = err.index("ERROR - Signal gpu1 unknown for")
    assert "dropped from the vote" in err[drop:] and "nvidia-ml-py" in err[drop:]
    assert err.index("idle (1/3)") > drop
