"""Peak hours: another preset (or no stopping) during the working day.

The seed's cost tips: stop eagerly at night, be patient while people work. With
``--peak-hours 09:00-18:00 --peak-preset conservative --timezone Asia/Seoul`` the
watchdog uses the conservative preset's threshold, idle limit and minimum runtime
from 09:00 to 18:00 Seoul time and its own settings the rest of the day;
``--peak-preset off`` never stops during peak hours (idle checks are still counted
and logged). A window may wrap midnight (``22:00-06:00``). The check interval is
always the watchdog's own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, time, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from reviewkit.watchdog.optiontable import OFF
from reviewkit.watchdog.policy import IdlePolicy

_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def parse_window(text: str) -> tuple[time, time]:
    """``"09:00-18:00"`` -> (09:00, 18:00); ``ValueError`` naming what is wrong."""
    parts = text.strip().split("-")
    if len(parts) != 2 or not all(_HHMM.match(p.strip()) for p in parts):
        raise ValueError(f"invalid value {text!r}: expected HH:MM-HH:MM, e.g. 09:00-18:00")
    start, end = (time(int(p.split(":")[0]), int(p.split(":")[1])) for p in parts)
    if start == end:
        raise ValueError(f"invalid value {text!r}: start and end are the same time")
    return start, end


def load_zone(name: str | None) -> tzinfo | None:
    """The IANA zone ``name`` (None: the machine's local time)."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (an IANA name such as Asia/Seoul; "
            "without system time zone data: pip install tzdata)"
        ) from None


@dataclass(frozen=True)
class PeakHours:
    start: time
    end: time
    preset: str = "conservative"
    zone: tzinfo | None = None
    zone_name: str = "local time"

    def active(self, epoch: float) -> bool:
        """Is ``epoch`` (seconds) inside the window, in the window's time zone?"""
        moment = datetime.fromtimestamp(epoch, self.zone) if self.zone else datetime.fromtimestamp(epoch)
        now = moment.time()
        if self.start < self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end

    def describe(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M} {self.zone_name}"

    def policy(self, base: IdlePolicy) -> IdlePolicy | None:
        """The policy in force during peak hours (None: no stopping)."""
        if self.preset == OFF:
            return None
        return replace(IdlePolicy.preset(self.preset), check_interval=base.check_interval)


def policy_at(base: IdlePolicy, peak: PeakHours | None, epoch: float) -> tuple[IdlePolicy, bool, bool]:
    """(policy, stopping allowed, in peak hours) at wall-clock time ``epoch``."""
    if peak is None or not peak.active(epoch):
        return base, True, False
    policy = peak.policy(base)
    return (policy, True, True) if policy is not None else (base, False, True)
