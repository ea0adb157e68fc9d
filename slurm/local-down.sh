#!/usr/bin/env bash
# Stop what slurm/local-up.sh started (only PIDs recorded in $ROOT/run). --purge: also wipe state, DB, configs.
ROOT=${SLURM_LOCAL_ROOT:-/tmp/slurm-local}; RUN=$ROOT/run
alive() { [[ -s $1 && $(cat "/proc/$(cat "$1")/comm" 2>/dev/null) == "$(basename "$1" .pid)" ]]; }
stop_pid() { alive "$1" || { rm -f "$1"; return 0; }; local p; p=$(cat "$1"); echo "stopping $(basename "$1" .pid) $p"
  kill "$p"; for _ in $(seq 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$p" 2>/dev/null; rm -f "$1"; }
if alive "$RUN/slurmctld.pid"; then   # job processes (slurmstepd) outlive slurmd: cancel jobs first
  jobs=$(squeue -h -o %A | sort -u)
  [[ -n $jobs ]] && scancel $jobs
  for _ in $(seq 100); do [[ -z $(squeue -h -t R,CG -o %A) ]] && break; sleep 0.2; done
fi
for d in slurmd slurmctld slurmdbd; do stop_pid "$RUN/$d.pid"; done
[[ ${1:-} == --purge ]] && alive "$RUN/mariadbd.pid" && mariadb -e 'DROP DATABASE IF EXISTS slurm_acct_db'
for d in mariadbd munged; do stop_pid "$RUN/$d.pid"; done
if [[ ${1:-} == --purge ]]; then
  rm -rf "$ROOT"/{state,spool,log,run,mysql} "$ROOT"/fakegpu* /etc/slurm/{slurm,slurmdbd,gres}.conf; fi
echo "slurm-local down"
