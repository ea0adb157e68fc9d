#!/usr/bin/env bash
# A real single-node SLURM cluster for the tests and CI (Debian 12, root, no systemd): munged,
# MariaDB + slurmdbd (submitit polls sacct), slurmctld, slurmd. Idempotent; `slurm/local-down.sh` stops it.
# See docs/cluster.md for the pitfalls this configuration avoids.
# Idempotent. Env: SLURM_LOCAL_ROOT, SLURM_LOCAL_FAKE_GPUS=N (fake gpu GRES so --gres=gpu:N runs)
set -euo pipefail
ROOT=${SLURM_LOCAL_ROOT:-/tmp/slurm-local}; RUN=$ROOT/run; GPUS=${SLURM_LOCAL_FAKE_GPUS:-0}; PW=slurmci
log() { echo "[slurm-local-up $(date +%T)] $*" >&2; }
die() { log "ERROR: $*"; tail -n 15 "$ROOT"/log/*.log >&2 || true; exit 1; }
alive() { [[ -s $1 && $(cat "/proc/$(cat "$1")/comm" 2>/dev/null) == "$(basename "$1" .pid)" ]]; }
wait_for() { local end=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do ((SECONDS < end)) || die "timeout: $what"; sleep 0.2; done; }
stop_pid() { alive "$1" || return 0; local p; p=$(cat "$1"); kill "$p"
  for _ in $(seq 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done; kill -9 "$p" 2>/dev/null || true; }
changed() { local t; t=$(mktemp); cat >"$t"  # install stdin as $1 (mode $2); true if content changed
  if cmp -s "$t" "$1"; then rm "$t"; return 1; fi; install -m "$2" "$t" "$1"; rm "$t"; }
T0=$SECONDS
missing=()
for p in munge slurmctld slurmd slurm-client slurmdbd mariadb-server; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
if ((${#missing[@]})); then log "installing ${missing[*]}"; export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; fi

NODE=$(hostname -s)
getent hosts "$NODE" >/dev/null || echo "127.0.0.1 $NODE" >>/etc/hosts
HW=$(slurmd -C | head -n1)   # NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105
hw() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$HW"; }
MEM=$(($(hw RealMemory) * 90 / 100))   # RealMemory above the real value drains the node
GRES="" GRESTYPES=""
if ((GPUS > 0)); then GRES="Gres=gpu:$GPUS" GRESTYPES="GresTypes=gpu"; fi
mkdir -p "$ROOT"/{state,spool,log,run}
for ((i = 0; i < GPUS; i++)); do [[ -c $ROOT/fakegpu$i ]] || mknod "$ROOT/fakegpu$i" c 1 3; done
install -d -o mysql -g mysql "$ROOT/mysql" /run/mysqld
install -d -o munge -g munge /run/munge

SLURM_NEW=0 DBD_NEW=0
changed /etc/slurm/slurm.conf 0644 <<EOF && SLURM_NEW=1
ClusterName=localci
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=5
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
EnforcePartLimits=ALL
ReturnToService=2
KillWait=5
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
StateSaveLocation=$ROOT/state
SlurmdSpoolDir=$ROOT/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$ROOT/log/slurmctld.log
SlurmdLogFile=$ROOT/log/slurmd.log
$GRESTYPES
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$(hw CPUs) Sockets=$(hw SocketsPerBoard) CoresPerSocket=$(hw CoresPerSocket) ThreadsPerCore=$(hw ThreadsPerCore) RealMemory=$MEM $GRES State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
if ((GPUS > 0)); then changed /etc/slurm/gres.conf 0644 <<<"Name=gpu File=$ROOT/fakegpu[0-$((GPUS - 1))]" && SLURM_NEW=1
elif [[ -e /etc/slurm/gres.conf ]]; then rm /etc/slurm/gres.conf; SLURM_NEW=1; fi
changed /etc/slurm/slurmdbd.conf 0600 <<EOF && DBD_NEW=1
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$ROOT/log/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageUser=slurm
StoragePass=$PW
EOF

STARTED=0
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  [[ -s /etc/munge/munge.key ]] || runuser -u munge -- mungekey --create
  log "starting munged"; runuser -u munge -- /usr/sbin/munged
  wait_for 15 munged sh -c 'munge -n </dev/null | unmunge'; cp /run/munge/munged.pid "$RUN/"; STARTED=1; fi
if ! mariadb-admin ping >/dev/null 2>&1; then
  log "starting mariadbd"
  setsid /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --innodb-lock-wait-timeout=900 \
    --pid-file="$ROOT/mysql/mariadbd.pid" --log-error="$ROOT/log/mariadb.err" </dev/null >/dev/null 2>&1 &
  wait_for 60 mariadbd mariadb-admin ping; cp "$ROOT/mysql/mariadbd.pid" "$RUN/"; STARTED=1; fi
mariadb -e "CREATE USER IF NOT EXISTS slurm@localhost IDENTIFIED BY '$PW'; GRANT ALL ON slurm_acct_db.* TO slurm@localhost"
((DBD_NEW)) && stop_pid "$RUN/slurmdbd.pid"
if ! alive "$RUN/slurmdbd.pid"; then log "starting slurmdbd"; /usr/sbin/slurmdbd
  wait_for 60 slurmdbd bash -c 'exec 3<>/dev/tcp/127.0.0.1/6819'; STARTED=1; fi
if ((SLURM_NEW)); then stop_pid "$RUN/slurmd.pid"; stop_pid "$RUN/slurmctld.pid"; fi  # conf hashes must match
if ! alive "$RUN/slurmctld.pid"; then log "starting slurmctld"; /usr/sbin/slurmctld
  wait_for 30 slurmctld sh -c 'scontrol ping | grep -q UP'; STARTED=1; fi
if ! alive "$RUN/slurmd.pid"; then log "starting slurmd"; /usr/sbin/slurmd; STARTED=1; fi
st() { sinfo -h -n "$NODE" -o %T 2>/dev/null; }
end=$((SECONDS + 30))
until [[ $(st) =~ ^(idle|mixed|allocated|completing)$ ]]; do
  [[ $(st) =~ drain|down ]] && scontrol update NodeName="$NODE" State=RESUME || true
  ((SECONDS < end)) || die "node state: $(st)"; sleep 0.3; done
wait_for 30 "cluster registration" sh -c 'sacctmgr -n -P show cluster format=cluster | grep -qx localci'
if ((STARTED)); then   # smoke test: a job runs and sacct records it
  jid=$(timeout 60 sbatch --parsable --wait -o /dev/null -t 1 --wrap true) || die "smoke job failed"
  wait_for 15 "sacct record" sh -c "sacct -n -X -j $jid -o State | grep -q COMPLETED"; fi
log "ready in $((SECONDS - T0)) s: $NODE $(st), gpus=$GPUS"
