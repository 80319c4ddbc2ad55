"""Idle watchdog for a RunPod pod: ``python watchdog.py --help`` (see docs/watchdog.md).

Kept as a top-level script for the seed's ``python watchdog.py`` habit; the logic is
in :mod:`reviewkit.watchdog` so notebooks can import and simulate it.
"""

if __name__ == "__main__":
    from reviewkit.watchdog.cli import main

    raise SystemExit(main())
