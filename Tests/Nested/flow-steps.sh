# Sourced by the nested tier's flow scripts (api-flow.sh, hotplug-flow.sh, snapshot-flow.sh): each prints one
# "$FLOW_PREFIX STEP NAME ok|FAILED" line per step for the host's test, and exits non-zero if one failed.
# shellcheck shell=bash
failed=0
step() { echo "$FLOW_PREFIX STEP $*"; }
expect() {  # WHAT COMMAND...: runs COMMAND and records the step as ok or FAILED
  local what=$1; shift
  if "$@"; then step "$what ok"; else step "$what FAILED"; failed=1; fi
}
waitfor() {  # SECONDS COMMAND...: runs COMMAND every POLL seconds (0.2) until it succeeds or SECONDS pass
  local end=$((SECONDS + $1)); shift
  until "$@"; do [ $SECONDS -lt $end ] || return 1; sleep "${POLL:-0.2}"; done
}
