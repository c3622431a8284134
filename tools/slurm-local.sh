#!/usr/bin/env bash
# A single-node SLURM on this machine, to run workflow/profiles/slurm for real (tests/test_slurm.py).
#   tools/slurm-local.sh start    install (apt-get, once), configure and start munged, slurmctld, slurmd
#   tools/slurm-local.sh stop     stop the daemons this script started (by their pid files)
#   tools/slurm-local.sh status   the daemons' pids and sinfo
# Needs root and a Debian-like system (SLURM 22.05 on Debian 12). It writes /etc/slurm/slurm.conf
# only where it is absent or was written by this script: a site's own SLURM is never touched.
# No systemd and no cgroups: daemons are started directly, processes tracked by /proc
# (proctrack/linuxproc), no task binding (task/none). No accounting database: sacct does not
# work, so the executor plugin must query job states with squeue (--slurm-status-command squeue);
# MinJobAge keeps finished jobs visible to squeue for 10 minutes, longer than the plugin's
# longest pause between status checks (3 minutes).
set -euo pipefail
CONF=/etc/slurm/slurm.conf
MARK="# written by llm4dsr tools/slurm-local.sh"
STATE=/var/lib/slurm-local          # controller state, node spool, logs, slurm pid files
PIDS=(/run/munge/munged.pid "$STATE/slurmctld.pid" "$STATE/slurmd.pid")  # munged writes its own default

die() { echo "slurm-local: $*" >&2; exit 1; }

running() {  # running PIDFILE: the pid in it is alive
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

install() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
    && command -v munged >/dev/null && return
  command -v apt-get >/dev/null || die "SLURM is not installed and there is no apt-get to install it (install slurm-wlm and munge)"
  echo "slurm-local: installing slurmctld slurmd slurm-client munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  # the package lists may be absent or stale on a fresh machine: update once on failure
  apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null 2>&1 || {
    apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null; } \
    || die "apt-get install slurmctld slurmd slurm-client munge failed"
}

configure() {
  [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF" && die "$CONF exists and was not written by this script: use that SLURM, or move it away"
  mkdir -p /etc/slurm "$STATE/ctld" "$STATE/spool" /run/munge
  # slurmd -C prints this machine's node line (name, CPUs, sockets, cores, threads, RealMemory)
  local node host
  node=$(slurmd -C | head -1)
  host=$(hostname -s)
  cat > "$CONF.new" <<CONF
$MARK (one node: this machine)
ClusterName=local
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MinJobAge=600
ReturnToService=2
$node State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  mv "$CONF.new" "$CONF"
  # munge: the package makes a key on install; make one if it did not
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile /etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  fi
  chown munge:munge /run/munge
}

start() {
  [ "$(id -u)" = 0 ] || die "needs root (it installs packages and starts daemons)"
  install
  configure
  # munged refuses to run as root: run it as the munge user the package created
  running "${PIDS[0]}" || runuser -u munge -- munged
  running "${PIDS[1]}" || slurmctld
  running "${PIDS[2]}" || slurmd
  local host
  host=$(hostname -s)
  for _ in $(seq 60); do  # the node registers within seconds
    case "$(sinfo -h -n "$host" -o %T 2>/dev/null)" in
      idle|mixed|allocated) echo "slurm-local: up (node $host: $(sinfo -h -n "$host" -o '%c CPUs, %m MB'))"; return ;;
      down*|drain*) scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
    esac
    sleep 1
  done
  die "the node did not become idle in 60 s: see $STATE/slurmctld.log and $STATE/slurmd.log"
}

stop() {
  local f pid
  for f in "${PIDS[2]}" "${PIDS[1]}" "${PIDS[0]}"; do  # slurmd, slurmctld, then munged
    running "$f" || { rm -f "$f"; continue; }
    pid=$(cat "$f")
    kill "$pid"
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && die "$(basename "$f" .pid) (pid $pid) did not stop"
    rm -f "$f"
  done
  echo "slurm-local: stopped"
}

status() {
  local f up=0
  for f in "${PIDS[@]}"; do
    if running "$f"; then echo "$(basename "$f" .pid): running (pid $(cat "$f"))"; up=$((up + 1));
    else echo "$(basename "$f" .pid): not running"; fi
  done
  [ "$up" = 3 ] && sinfo
  [ "$up" = 3 ]
}

case "${1:-}" in
  start|stop|status) "$1" ;;
  *) die "usage: $0 start|stop|status" ;;
esac
