# Stops labhop's JupyterLab: TERM, then KILL, and reports stopped only once it is gone.
# Shipped as `sh -c` by tasks/plan.py stop_step. By hand: sh stop.sh PID PID_FILE [TMUX SESSION]
pid=$1 pid_file=$2 tmux=${3:-} session=${4:-}
kill -TERM "$pid" 2>/dev/null || true
i=0
while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
# A loaded machine can take a moment even after SIGKILL: report stopped only once it is gone.
while kill -0 "$pid" 2>/dev/null && [ $i -lt 150 ]; do sleep 0.1; i=$((i+1)); done
rm -f "$pid_file"
if [ -n "$tmux" ]; then "$tmux" kill-session -t "=$session" 2>/dev/null; fi
true
