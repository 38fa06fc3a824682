"""Run a vidbatch command; report the driver process's own peak RSS (VmHWM), CPU seconds and wall time."""
import os, subprocess, sys, time
env = {**os.environ, "PYTHONPATH": os.environ.get("REPO", ".")}
label, cmd = sys.argv[1], sys.argv[2:]
load = open("/proc/loadavg").read().split()[:3]
t0 = time.monotonic()
proc = subprocess.Popen([os.environ.get("VIDBATCH", "vidbatch"), *cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
hwm = 0; cpu = 0.0
import threading
out = []
threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True).start()
tick = os.sysconf("SC_CLK_TCK")
while proc.poll() is None:
    try:
        for line in open(f"/proc/{proc.pid}/status"):
            if line.startswith("VmHWM"):
                hwm = max(hwm, int(line.split()[1]))
        f = open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()
        cpu = (int(f[11]) + int(f[12])) / tick
    except (FileNotFoundError, ProcessLookupError, IndexError):
        pass
    time.sleep(0.05)
wall = time.monotonic() - t0
time.sleep(0.2)
text = "".join(out)
keep = [l for l in text.splitlines() if any(w in l for w in ("manifest rows", "wall", "committed", "nothing", "Error", "error", "planning", "videos table now", "changed 0", "new ", "timing", " s)"))]
print(f"== {label}: exit {proc.returncode}, driver peak RSS {hwm/1024:.0f} MB, driver CPU {cpu:.1f} s, wall {wall:.1f} s, load {' '.join(load)}")
print("\n".join("   " + l[:300] for l in keep[:25]))
open(f"log-{label}.txt", "w").write(text)
