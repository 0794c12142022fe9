#!/bin/sh
# status.sh: is an execsvc worker serving the queue? Prints what it finds and exits
# 0 only when a worker is serving, 1 when none is, 2 when the queue cannot be found or read.
# The counts and the worker are what `queue-view --json` says (installed with execsvc).
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

# The counts and the worker come from the installed command (`queue-view --json`, the fronts'
# own api.queue_status): this script counts nothing itself, so it cannot disagree with them.
if [ -x "$here/.venv/bin/queue-view" ]; then
    view="$here/.venv/bin/queue-view"
elif command -v queue-view >/dev/null 2>&1; then
    view="queue-view"
else
    echo "status.sh: queue-view is not installed (pip install execsvc), so the queue cannot be read" >&2
    exit 2
fi
if ! json=$("$view" --queue-dir "$queue" --json --limit 1); then
    echo "worker:  unknown (queue-view could not read the queue: its message is above)"
    exit 2
fi
# One line of JSON: {"status": {"queue_dir": ..., "counts": {...}, "worker": {...}}, "jobs": [...]}.
# Only the status part is read; a key's quotes are never escaped, a string's always are.
status_json=${json%%', "jobs": '*}
field() {
    printf '%s\n' "$status_json" | sed -n "s/.*\"$1\": \([0-9a-z][0-9a-z]*\).*/\1/p"
}

printf 'jobs:    pending %s, running %s, completed %s, failed %s\n' \
    "$(field pending)" "$(field running)" "$(field completed)" "$(field failed)"

serving=1
if [ "$(field serving)" = true ]; then
    slots=$(field slots)
    echo "worker:  serving (pid $(field pid), ${slots:-?} slots)"
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
