#!/bin/sh
# status.sh: is an execsvc worker serving the queue? Prints what it finds and exits
# 0 only when a worker is serving, 1 when none is, 2 when the queue cannot be found.
# Also says whether the launchd agent / systemd user unit is loaded (execsvc service install).
#
# Usage: ./status.sh [QUEUE_DIR]
#   QUEUE_DIR defaults to $EXECSVC_QUEUE_DIR, else what `execsvc queue-dir` prints
#   (this checkout's .venv first, then PATH).
set -u

here=$(cd "$(dirname "$0")" && pwd)
queue=${1:-${EXECSVC_QUEUE_DIR:-}}
if [ -z "$queue" ]; then
    if [ -x "$here/.venv/bin/execsvc" ]; then
        queue=$("$here/.venv/bin/execsvc" queue-dir)
    elif command -v execsvc >/dev/null 2>&1; then
        queue=$(execsvc queue-dir)
    else
        echo "status.sh: no queue given, EXECSVC_QUEUE_DIR unset and execsvc not installed" >&2
        exit 2
    fi
fi

echo "queue:   $queue"

# Is the service manager's agent loaded? (launchd on macOS, a systemd user unit elsewhere)
if command -v launchctl >/dev/null 2>&1; then
    if launchctl print "gui/$(id -u)/com.brain.execution-server" >/dev/null 2>&1; then
        echo "service: launchd agent com.brain.execution-server loaded"
    else
        echo "service: launchd agent com.brain.execution-server not loaded (execsvc service install)"
    fi
elif command -v systemctl >/dev/null 2>&1; then
    state=$(systemctl --user is-active execsvc.service 2>/dev/null) || true
    case $state in
        active|activating|reloading) echo "service: systemd user unit execsvc.service $state" ;;
        "") echo "service: systemd user manager not reachable (no user session here)" ;;
        *) echo "service: systemd user unit execsvc.service $state (execsvc service install)" ;;
    esac
else
    echo "service: no launchctl or systemctl here"
fi
if [ ! -d "$queue/pending" ]; then
    echo "worker:  none (no queue here yet: a worker creates it when it starts)"
    exit 1
fi

# Jobs in a folder: visible entries, counting a finished job once (its record).
count_jobs() {
    n=0
    for entry in "$1"/* "$1"/.[!.]* ; do
        [ -e "$entry" ] || [ -L "$entry" ] || continue
        name=${entry##*/}
        case $name in
            .*|*.tmp) continue ;;
            *.result.json) n=$((n + 1)); continue ;;
        esac
        if [ "$2" = finished ]; then
            stem=${name%.json}
            [ "$stem" != "$name" ] && [ ! -e "$1/$stem.result.json" ] && n=$((n + 1))
        else
            n=$((n + 1))
        fi
    done
    echo "$n"
}

printf 'jobs:    pending %s, running %s, completed %s, failed %s\n' \
    "$(count_jobs "$queue/pending" waiting)" "$(count_jobs "$queue/running" waiting)" \
    "$(count_jobs "$queue/completed" finished)" "$(count_jobs "$queue/failed" finished)"

serving=1
pid=""
if [ -f "$queue/worker.json" ]; then
    pid=$(sed -n 's/.*"pid":[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$queue/worker.json")
fi
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && ps -ww -o args= -p "$pid" 2>/dev/null | grep -q execsvc; then
    slots=$(sed -n 's/.*"slots":[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$queue/worker.json")
    echo "worker:  serving (pid $pid, ${slots:-?} slots)"
    serving=0
else
    echo "worker:  not running"
fi

# A link there is never followed (it may point at a file a job may not read), nor a FIFO read.
if [ -L "$queue/daemon.log" ] || { [ -e "$queue/daemon.log" ] && [ ! -f "$queue/daemon.log" ]; }; then
    echo "daemon.log is not a regular file; it is not read"
elif [ -f "$queue/daemon.log" ]; then
    echo "daemon.log (last 5 lines):"
    tail -n 5 "$queue/daemon.log" | sed 's/^/  /'
fi
exit "$serving"
