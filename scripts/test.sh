#!/usr/bin/env bash
# Installs everything the tests need, then runs the stages and prints each one's time:
#   lint     ruff, mypy and the dependency audit (scripts/audit_deps.py)
#   unit     tests/unit: in-process, nothing but the package
#   redis    tests/redis: a real redis-server of the tests' own
#   e2e      tests/e2e: gateway, stand-in, bench and tool processes (two pytest-xdist workers)
#   clients  tests/clients: the client matrix and the README's examples
#   docker   tests/docker: a Docker engine of the run's own
# unit and redis run at the same time, then e2e alone, then clients and docker at the same time: each of
# those stages spends most of its wall time waiting (on processes, the network, the disk), not on a core.
# lint runs from the start of unit to the end of e2e at the lowest CPU priority (nice 19): it only takes a
# core that the tests leave idle, and nothing waits for it. (Tried: docker beside e2e, its tests starting as
# their images were built; under e2e at load 10 the compose stack's gateway overran its stop grace, exit 137.)
# A stage run beside others writes to a log of its own, printed whole once it is done, in the order unit,
# redis, e2e, lint, clients, docker.
# Usage: bash scripts/test.sh [--fast] [pytest options...]
#   --fast   lint (ruff only), unit and redis: the inner loop (about 1.5 minutes on a 2-core machine)
# Every stage runs even when an earlier one failed; the exit status is the first failure's.
#
# Installed when missing, through apt-get: redis-server (the cache in tests; also the cluster and, run as
# `redis-server --sentinel`, the Sentinel of tests/support/redisfarm.py), openssl (the TLS tests' CA),
# prometheus + promtool (the dashboards and alert rules are evaluated by a real Prometheus),
# docker-compose (runs docker-compose.yml), docker.io (dockerd: tests/docker start their own engine, on a
# socket of their own, and stop it) and debootstrap (the base images those tests build; no container
# registry is reachable in CI), default-jdk-headless and curl (clients that offer h2c:
# tests/clients/test_upgrade_offers.py); the package with its local and dev extras into .venv
# (scripts/install.sh, as the Dockerfile does); the client matrix (scripts/install-clients.sh):
# .venv-clients, the openai npm package, golang-go, a JDK. --fast installs only what its stages need.
#
# The Docker images (the run's longest chain: on vfs every build step copies the whole image; about 13 min
# on a 2-core machine at load 5) are built in the background from the very start of the run, before the
# package is installed (tests/support/dockerbuild.py needs only python3), while the other stages run; so is
# the client matrix installed (scripts/install-clients.sh), which the clients stage waits for.
set -euo pipefail
cd "$(dirname "$0")/.."
fast=0
if [ "${1:-}" = "--fast" ]; then fast=1; shift; fi

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v openssl >/dev/null 2>&1 || need+=(openssl)  # the TLS Redis tests make their own CA
if [ $fast -eq 0 ]; then
  { command -v prometheus && command -v promtool; } >/dev/null 2>&1 || need+=(prometheus)
  command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
  command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
  command -v java >/dev/null 2>&1 || need+=(default-jdk-headless)  # the JDK's own HttpClient (h2c offers)
  command -v curl >/dev/null 2>&1 || need+=(curl)  # curl --http2 (h2c offers)
fi
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

docker_home=""
stage_logs=()
cleanup() {
  rm -f "${stage_logs[@]/%/.line}" "${stage_logs[@]}" "${clients_log:-}" "${clients_log:-}.rc"
  if [ -n "$docker_home" ]; then
    [ -f "$docker_home/docker.pid" ] && kill "$(cat "$docker_home/docker.pid")" 2>/dev/null || true
    for _ in $(seq 60); do [ -S "$docker_home/docker.sock" ] || break; sleep 1; done
    # dockerd leaves its network namespace (exec/netns/default) mounted: unmount what is left under the
    # folder, deepest first, so that it can be removed; a cleanup never changes the run's exit status.
    awk -v d="$docker_home/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r |
      while read -r mnt; do umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true; done
    rm -rf "$docker_home" "$docker_home.log" "$docker_home.rc" 2>/dev/null || true
  fi
}
trap cleanup EXIT
# background RC COMMAND...: runs it in the background, its exit status written to the file RC when it ends;
# awaited RC waits for that and returns it. (A stage run beside others is a subshell: `wait` there cannot
# wait for a job of this shell's.)
background() {
  local rc_file=$1
  shift
  { rc=0; "$@" || rc=$?; echo "$rc" >"$rc_file"; } &
}
awaited() {
  while [ ! -s "$1" ]; do sleep 1; done
  return "$(cat "$1")"
}
if [ $fast -eq 0 ] && [ "$(id -u)" -eq 0 ] && command -v dockerd >/dev/null 2>&1; then
  docker_home=$(mktemp -d /tmp/eg-docker-XXXXXX)
  background "$docker_home.rc" "${PYTHON:-python3}" -m tests.support.dockerbuild "$docker_home" >"$docker_home.log" 2>&1
fi
# The client matrix (a virtualenv of its own and npm packages: about 3 minutes new) installs in the
# background too, from the start (it needs nothing of .venv); the clients stage waits for it.
clients_log=""
if [ $fast -eq 0 ]; then
  clients_log=$(mktemp /tmp/eg-clients-install-XXXXXX)
  background "$clients_log.rc" bash scripts/install-clients.sh >"$clients_log" 2>&1
fi

# --fast skips the install when nothing it reads changed since the last one (the inner loop's seconds).
# Installed without pip's byte-compiling (about half the install's CPU: measured in a new .venv with pip's
# cache warm, 58 + 154 s wall / 32 + 77 s CPU compiled, 17 + 88 s / 12 + 46 s not, load 4-5): each module is
# compiled when first imported and kept, so a PYTHONDONTWRITEBYTECODE of the caller's is dropped here.
unset PYTHONDONTWRITEBYTECODE
stamp=.venv/.test-sh-installed
if [ $fast -eq 0 ] || [ ! -f $stamp ] || [ pyproject.toml -nt $stamp ] || [ constraints.txt -nt $stamp ]; then
  bash scripts/install.sh --local --dev --no-compile
  touch $stamp
fi
. .venv/bin/activate

status=0
summary=()
cpu() {  # CPU seconds (user + system) of the children this shell has waited for, from `times` in file $1
  tail -1 "$1" | awk '{ for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } } END { print t }'
}
timed() {  # timed NAME LINE COMMAND...: runs it; writes its wall and CPU seconds and the load after it to LINE
  local name=$1 out=$2 rc=0 t0 c0 tf
  shift 2
  echo "=== stage $name: $*"
  tf=$(mktemp)
  t0=$(date +%s.%N)
  times >"$tf"
  c0=$(cpu "$tf")
  "$@" || rc=$?
  times >"$tf"
  awk -v n="$name" -v t0="$t0" -v t1="$(date +%s.%N)" -v c0="$c0" -v c1="$(cpu "$tf")" -v rc="$rc" \
    -v la="$(cut -d' ' -f1-3 /proc/loadavg)" \
    'BEGIN { printf "%-8s %6.0f s wall %6.0f s cpu   load %s   %s", n, t1 - t0, c1 - c0, la, rc ? "FAILED" : "ok" }' >"$out"
  rm -f "$tf"
  echo "=== $(cat "$out")"
  return $rc
}
record() {  # record RC LINE: adds the stage's line to the summary; the first failure's status is the run's
  summary+=("$(cat "$2")")
  if [ "$1" -ne 0 ] && [ $status -eq 0 ]; then status=$1; fi
}
declare -A beside=()
begin() {  # begin NAME COMMAND...: starts the stage in the background, its output to a log of its own
  local name=$1 log
  log=$(mktemp "/tmp/eg-stage-$name-XXXXXX")
  stage_logs+=("$log")
  timed "$name" "$log.line" "${@:2}" >"$log" 2>&1 &
  beside[$name]="$! $log"
}
finish() {  # finish NAME: waits for the stage begun as NAME, prints its log and records it
  local pid log rc=0
  read -r pid log <<<"${beside[$1]}"
  wait "$pid" || rc=$?
  cat "$log"
  record $rc "$log.line"
}
stage() {  # stage NAME COMMAND...: runs it in the foreground, its output as it comes
  local log rc=0
  log=$(mktemp "/tmp/eg-stage-$1-XXXXXX")
  stage_logs+=("$log")
  (timed "$1" "$log.line" "${@:2}") || rc=$?  # a subshell: its CPU is its own children's only
  record $rc "$log.line"
}
lint() {
  local rc=0
  # At the lowest CPU priority (mypy's cold run is about 40 s of CPU, all of lint about 50): the unit, redis
  # and e2e stages run beside it, and some of their tests time the event loop or a gateway's answers.
  renice -n 19 -p "$BASHPID" >/dev/null 2>&1 || true
  ruff check app bench tests || rc=1
  [ $fast -eq 1 ] && return $rc
  mypy -p app || rc=1
  python scripts/audit_deps.py || rc=1  # known vulnerabilities in the pinned versions fail the run
  return $rc
}
docker_stage() {
  if [ -n "$docker_home" ]; then
    # The images may still be building in the background engine: each test waits for the image it needs
    # (tests/support/dockerbuild.py, awaited), so the default image's tests run while the local one builds.
    # Two pytest-xdist workers, a file at a time on one (the compose stack on one, the images and the k8s
    # manifest on the other): the tests wait on containers (27 s of CPU in a 308 s stage, one at a time).
    until [ -S "$docker_home/docker.sock" ] || [ -s "$docker_home.rc" ]; do sleep 1; done
    if [ ! -s "$docker_home.rc" ] || [ "$(cat "$docker_home.rc")" = 0 ]; then
      local rc=0
      EG_TEST_DOCKER_HOME="$docker_home" EG_TEST_DOCKER_PREBUILT=1 python -m pytest tests/docker -n 2 --dist loadfile "$@" || rc=$?
      cat "$docker_home.log"
      return $rc
    fi
    tail -40 "$docker_home.log"
    echo "tests/support/dockerbuild.py failed (above): the tests start their own engine and build"
  fi
  python -m pytest tests/docker "$@"
}
clients_stage() {
  if ! awaited "$clients_log.rc"; then
    tail -60 "$clients_log"
    echo "scripts/install-clients.sh failed (above)"
    rm -f "$clients_log"
    return 1
  fi
  rm -f "$clients_log"
  python -m pytest tests/clients "$@"
}
# The session-wide secrets check (every log a gateway of the session wrote) also runs after the clients.
SECRETS_SCAN=tests/e2e/test_secrets.py::test_nothing_a_gateway_of_this_session_wrote_or_serves_holds_a_secret
e2e_stage() {
  # The e2e files run on two pytest-xdist workers, a file at a time on one worker (its module fixtures
  # as before): most of their time is spent waiting on the processes they start, so two workers use the
  # second core (measured: 431 s wall for the stage against about 12 min of CPU in one process). The
  # workers' gateways log under EG_TEST_LOGS, which the secrets scan reads once every worker is done.
  local rc=0
  EG_TEST_LOGS=$(mktemp -d)
  export EG_TEST_LOGS
  python -m pytest tests/e2e -n 2 --dist loadfile --deselect "$SECRETS_SCAN" "$@" || rc=$?
  python -m pytest "$SECRETS_SCAN" "$@" || { r=$?; [ $rc -ne 0 ] || rc=$r; }
  rm -rf "$EG_TEST_LOGS"
  unset EG_TEST_LOGS
  return $rc
}

begin lint lint
begin unit python -m pytest tests/unit "$@"
begin redis python -m pytest tests/redis "$@"
finish unit
finish redis
if [ $fast -eq 0 ]; then
  stage e2e e2e_stage "$@"
fi
finish lint
if [ $fast -eq 0 ]; then
  begin clients clients_stage "$SECRETS_SCAN" "$@"
  begin docker docker_stage "$@"
  finish clients
  finish docker
fi
echo "=== stages (wall and CPU seconds, load average at the end of each):"
printf '%s\n' "${summary[@]}"
exit $status
