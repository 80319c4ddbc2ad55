#!/usr/bin/env bash
# Device check for the idle watchdog on a machine with a real NVIDIA GPU.
#
# Runs `python watchdog.py --dry-run` against real NVML while a ~20 s torch matmul
# loop keeps the GPU busy, then after the loop ends, and prints the busy -> idle
# transition and the would-stop line. No RunPod API call is made (--dry-run).
# Finishes in about a minute; exits 0 when the watchdog saw GPU work, then counted
# idle checks only after the load ended, then decided to stop.
#
#   bash scripts/gpu_watchdog_check.sh            # from the repository root
#   PYTHON=/path/to/python LOAD_SECONDS=20 bash scripts/gpu_watchdog_check.sh
set -uo pipefail

cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
LOAD_SECONDS="${LOAD_SECONDS:-20}"
WORK="$(mktemp -d)"
LOG="$WORK/watchdog.log"
trap 'kill "${LOAD_PID:-}" "${WD_PID:-}" 2>/dev/null; rm -rf "$WORK"' EXIT

say() { printf '== %s\n' "$*"; }

say "GPUs"
nvidia-smi -L || { echo "FAIL: nvidia-smi not available"; exit 1; }

need() {  # need MODULE PIP_NAME: import it, else try to pip install it
  "$PY" -c "import $1" 2>/dev/null && return 0
  say "installing $2"
  "$PY" -m pip install -q "$2" >/dev/null 2>&1 || true
  "$PY" -c "import $1" 2>/dev/null || { echo "FAIL: python module $1 ($2) missing and not installable"; exit 1; }
}
need pynvml nvidia-ml-py
need torch torch
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
  || { echo "FAIL: torch cannot see a CUDA device"; exit 1; }

say "starting a ${LOAD_SECONDS}s matmul load"
"$PY" - "$WORK" "$LOAD_SECONDS" <<'EOF' &
import pathlib, sys, time
import torch
work, seconds = pathlib.Path(sys.argv[1]), float(sys.argv[2])
a = torch.randn(8192, 8192, device="cuda")
b = torch.randn(8192, 8192, device="cuda")
torch.cuda.synchronize()
(work / "load_started").write_text(str(time.time()))
end = time.time() + seconds
while time.time() < end:
    for _ in range(8):
        a = (a @ b).clamp_(-1, 1)
    torch.cuda.synchronize()
(work / "load_ended").write_text(str(time.time()))
EOF
LOAD_PID=$!
for _ in $(seq 1 240); do
  [ -f "$WORK/load_started" ] && break
  kill -0 "$LOAD_PID" 2>/dev/null || { echo "FAIL: the torch load died"; exit 1; }
  sleep 0.25
done
[ -f "$WORK/load_started" ] || { echo "FAIL: the torch load did not start within 60 s"; exit 1; }

say "watchdog (dry-run, real NVML, interval 1 s, idle limit 3, min runtime 0)"
REVIEWKIT_ACTIVITY_FILE="$WORK/activity.json" timeout 120 "$PY" watchdog.py --dry-run \
  --pod-id gpu-check --check-interval 1 --idle-limit 3 --min-runtime 0 \
  --state-file "$WORK/state.json" >"$LOG" 2>&1 &
WD_PID=$!
wait "$LOAD_PID"; LOAD_RC=$?
say "load finished (rc $LOAD_RC)"
wait "$WD_PID"; WD_RC=$?
cat "$LOG"

say "transition"
"$PY" - "$LOG" "$WORK" "$WD_RC" <<'EOF'
import pathlib, sys, time
log, work, rc = pathlib.Path(sys.argv[1]).read_text().splitlines(), pathlib.Path(sys.argv[2]), int(sys.argv[3])
ended = float((work / "load_ended").read_text()) if (work / "load_ended").exists() else None
def stamp(line):
    return time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
busy = [l for l in log if "Work detected (gpu" in l]
idle = [l for l in log if " - INFO - idle (" in l]
stop = [l for l in log if "[dry-run] would stop pod gpu-check" in l]
print("GPU samples:", " ".join(l.rsplit(": ", 1)[1] for l in log if "GPU utilization:" in l))
print("last busy :", busy[-1] if busy else None)
print("first idle:", idle[0] if idle else None)
print("would stop:", stop[0] if stop else None)
ok = bool(busy and idle and stop) and rc == 0
if ok and ended is not None:
    # idle counting starts only after the load ended (1 s log resolution + 1 check)
    ok = stamp(idle[0]) >= int(ended) - 1 and log.index(busy[-1]) < log.index(idle[0])
    print(f"load ended at {time.strftime('%H:%M:%S', time.localtime(ended))}; "
          f"stop decided {stamp(stop[0]) - ended:+.0f}s after it")
print("PASS: busy -> idle -> would stop" if ok else f"FAIL (watchdog rc {rc})")
sys.exit(0 if ok else 1)
EOF
