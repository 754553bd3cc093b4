#!/usr/bin/env bash
# The mesh benchmarks behind BENCHMARKS.md ("Mesh (issue 3)"): each line of output is one
# JSON object. Each runs a local mesh (deploy/local/mesh: etcd, Redis, us-east x2,
# eu-west, ap-south) in a temp dir and stops all of it at the end. Release build.
#   benches/mesh.sh                # all: failover at TTL 2 s and 3 s, then throughput
#   benches/mesh.sh failover [TTL] # failover gap: SIGKILL the shard-0 owner KILLS times
#   benches/mesh.sh throughput     # JOBS no-op jobs every PERIOD_S over 3 regions, DURATION_S
# Knobs (env): MERIDIAN_BIN (skip the build), KILLS=10, JOBS=50000, PERIOD_S=10,
# DURATION_S=30, SHARDS=1, MESH_BENCH_KEEP=1 (keep the temp dir, with the nodes' logs).
# Failover reads the run records through the CLI (python3 from the standard library does
# the arithmetic). Throughput creates its jobs through the gRPC API with a small Python
# client (grpcio, installed once into ~/.cache/meridian-bench/venv from PyPI) and reads
# the run records straight from Redis afterwards (the API lists runs per job: 50,000
# calls). Takes about 4 min per failover run and 4-5 min for throughput.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

kills=${KILLS:-10}
jobs=${JOBS:-50000}
period_s=${PERIOD_S:-10}
duration_s=${DURATION_S:-30}
shards=${SHARDS:-1}
failover_jobs=20          # interval jobs at 1 s in us-east (its two nodes run them)
takeover_s_max=30         # bound on waiting for a new shard-0 owner after a kill
rejoin_s_max=60           # bound on waiting for a restarted node to be a member again
settle_s=35               # after the last round: serve's visibility timeout (30 s) + 5 s

which=${1:-all}
case "$which" in all|failover|throughput) ;; *) echo "unknown benchmark: $which" >&2; exit 2 ;; esac
want() { [ "$which" = all ] || [ "$which" = "$1" ]; }

if [ -z "${MERIDIAN_BIN:-}" ]; then
  cargo build --release --quiet
  MERIDIAN_BIN=$root/target/release/meridian
fi
export MERIDIAN_BIN
export MERIDIAN_LOG=${MERIDIAN_LOG:-warn}
m=$MERIDIAN_BIN
mesh=$root/deploy/local/mesh

work=$(mktemp -d "${TMPDIR:-/tmp}/meridian-mesh-bench.XXXXXX")
meshdir=$work/mesh
# Keep the nodes' logs (in $work/logs/LABEL) before a mesh goes down.
save_logs() {
  local n
  mkdir -p "$work/logs/$1"
  for n in "$meshdir"/nodes/*/; do cp "$n/node.log" "$work/logs/$1/$(basename "$n").log" 2>/dev/null || true; done
}
cleanup() {
  [ -f "$meshdir/state.json" ] && save_logs last
  "$mesh" down --dir "$meshdir" >/dev/null 2>&1 || true
  if [ -n "${MESH_BENCH_KEEP:-}" ]; then note "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

note() { echo "# $*" >&2; }
now_ns() { date +%s%N; }
state() { jq -r "$1" "$meshdir/state.json"; }
# The JSON cluster status, asked of the first node in the list that answers.
cluster_status() {
  local ep
  for ep in $(state '.nodes[].endpoint'); do
    "$m" --endpoint "$ep" --output json cluster status 2>/dev/null && return 0
  done
  return 1
}

# Python helpers: statistics for both benchmarks (stdlib), job creation and run reading
# for throughput (grpcio, redis).
cat >"$work/meshbench.py" <<'PY'
"""Helpers of benches/mesh.sh: failover gaps from run records, bulk job creation over
gRPC, throughput and lateness from the run records in Redis."""
import json, sys, os
from datetime import datetime

def ts_ns(s):
    # RFC 3339 UTC with up to nanoseconds, e.g. 2026-11-23T05:10:32.123456789Z
    s = s.rstrip("Z")
    if s.endswith("+00:00"):
        s = s[:-6]
    base, _, frac = s.partition(".")
    secs = int(datetime.fromisoformat(base + "+00:00").timestamp())
    return secs * 1_000_000_000 + int((frac + "000000000")[:9])

def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

def failover_gap(argv):
    """gap KILL_NS OLD_EPOCH RUNS.json...: ms from the kill to the first attempt start
    with an epoch newer than the killed owner's, and the first attempt start by any epoch
    after the kill."""
    kill_ns, old_epoch = int(argv[0]), int(argv[1])
    first_new = first_any = None
    for f in argv[2:]:
        for run in json.load(open(f)):
            for a in run.get("attempts", []):
                if not a.get("start_time"):
                    continue
                t = ts_ns(a["start_time"])
                if t < kill_ns:
                    continue
                first_any = t if first_any is None else min(first_any, t)
                if int(a.get("epoch") or 0) > old_epoch:
                    first_new = t if first_new is None else min(first_new, t)
    out = {"gap_ms": None if first_new is None else round((first_new - kill_ns) / 1e6, 1),
           "first_any_ms": None if first_any is None else round((first_any - kill_ns) / 1e6, 1)}
    print(json.dumps(out, separators=(",", ":")))

def failover_check(argv):
    """check FROM_NS TO_NS READ_NS RUNS.json...: over runs scheduled in [FROM, TO): runs with more
    than one attempt started, firing ids seen twice, instants missing per job (1 s
    interval), and runs not succeeded."""
    lo, hi, read_ns = int(argv[0]), int(argv[1]), int(argv[2])
    argv = argv[2:]
    newest = 0
    dup_attempts = dup_ids = missing = not_ok = total = 0
    states = {}
    for f in argv[2:]:
        seen, secs = set(), set()
        for run in json.load(open(f)):
            t = ts_ns(run["scheduled_time"])
            newest = max(newest, t)
            if not lo <= t < hi:
                continue
            total += 1
            if run["firing_id"] in seen:
                dup_ids += 1
            seen.add(run["firing_id"])
            secs.add(t // 1_000_000_000)
            started = [a for a in run.get("attempts", []) if a.get("start_time")]
            if len(started) > 1:
                dup_attempts += 1
            if run.get("state") != "succeeded":
                not_ok += 1
                k = f'{run.get("state")}: {run.get("reason") or ""}'.strip(": ")
                states[k] = states.get(k, 0) + 1
        if secs:
            missing += (max(secs) - min(secs) + 1) - len(secs)
    print(json.dumps({"runs": total, "runs_with_2_attempts": dup_attempts,
                      "duplicate_firing_ids": dup_ids, "instants_missing": missing,
                      "not_succeeded": not_ok, "not_succeeded_states": states,
                      # how long before the final reading the newest firing was due
                      # (about 1 s while firing goes on)
                      "newest_firing_age_ms": round((read_ns - newest) / 1e6)},
                     separators=(",", ":")))

def summarize_failover(argv):
    """summary TTL KILLS ROUNDS.jsonl CHECK.json: the benchmark's JSON line."""
    ttl, kills = int(argv[0]), int(argv[1])
    rounds = [json.loads(l) for l in open(argv[2]) if l.strip()]
    check = json.load(open(argv[3]))
    gaps = [r["gap_ms"] for r in rounds if r.get("gap_ms") is not None]
    out = {"bench": "failover_gap", "ttl_s": ttl, "kills": kills,
           "measured": len(gaps),
           "p50_ms": pct(gaps, 50), "max_ms": max(gaps) if gaps else None,
           "target_ms": ttl * 1000 + 1000, "gaps_ms": [r.get("gap_ms") for r in rounds],
           "takeover_ms": [r.get("takeover_ms") for r in rounds],
           "killed": [r.get("killed") for r in rounds]}
    out.update(check)
    print(json.dumps(out, separators=(",", ":")))

def create(argv):
    """create GEN_DIR JOBS PERIOD_S ANCHOR_NS REGION=ENDPOINT...: JOBS no-op interval jobs
    tp-NNNNNN, round-robin over the regions, anchors spread evenly over one period so the
    firings are uniform; many requests in flight."""
    gen, jobs, period_s, anchor_ns = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    targets = [a.split("=", 1) for a in argv[4:]]
    sys.path.insert(0, gen)
    import grpc
    from concurrent.futures import ThreadPoolExecutor
    from meridian.v1 import meridian_pb2 as pb, meridian_pb2_grpc as rpc
    from google.protobuf import duration_pb2, timestamp_pb2
    stubs = {r: rpc.SchedulerStub(grpc.insecure_channel(ep.replace("http://", ""))) for r, ep in targets}
    regions = [r for r, _ in targets]
    period_ns = period_s * 1_000_000_000

    def one(i):
        region = regions[i % len(regions)]
        a = anchor_ns + i * period_ns // jobs
        req = pb.CreateJobRequest(
            parent=f"regions/{region}", job_id=f"tp-{i:06d}",
            job=pb.Job(schedule=pb.Schedule(
                interval=duration_pb2.Duration(seconds=period_s),
                interval_anchor=timestamp_pb2.Timestamp(seconds=a // 1_000_000_000, nanos=a % 1_000_000_000)),
                action=pb.Action(noop=pb.NoopAction())),
            request_id=f"tp-{i:06d}")
        for attempt in range(5):
            try:
                stubs[region].CreateJob(req, timeout=30)
                return None
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.ALREADY_EXISTS:
                    return None
                err = f"{e.code()}: {e.details()}"
        return err

    errors = []
    with ThreadPoolExecutor(max_workers=64) as ex:
        for e in ex.map(one, range(jobs), chunksize=64):
            if e:
                errors.append(e)
    if errors:
        print(f"{len(errors)} creates failed, e.g. {errors[0]}", file=sys.stderr)
        sys.exit(1)

def throughput(argv):
    """throughput REDIS_URL T0_NS T1_NS JOBS PERIOD_S REGIONS: firings/s (attempts started
    in [T0, T1)), lateness of the firings due in [T0, T1), early starts."""
    import redis
    url, t0, t1, jobs, period_s, nregions = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), int(argv[4]), int(argv[5])
    r = redis.Redis.from_url(url)
    started_in = early = due_in = not_started = 0
    lateness_ms, nodes = [], {}
    keys = []
    for k in r.scan_iter(match="*:run:*", count=10000):
        keys.append(k)
    for i in range(0, len(keys), 2000):
        p = r.pipeline(transaction=False)
        for k in keys[i:i + 2000]:
            p.hmget(k, "run", "a:1")
        for res in p.execute(raise_on_error=False):
            if isinstance(res, Exception):
                continue   # not a run hash
            run_s, a_s = res
            if run_s is None:
                continue
            run = json.loads(run_s)
            due = ts_ns(run["due_at"])
            a = json.loads(a_s) if a_s else None
            st = ts_ns(a["started_at"]) if a else None
            if st is not None and t0 <= st < t1:
                started_in += 1
                nodes[a["node"]] = nodes.get(a["node"], 0) + 1
            if st is not None and st < due:
                early += 1
            if t0 <= due < t1:
                due_in += 1
                if st is None:
                    not_started += 1
                else:
                    lateness_ms.append((st - due) / 1e6)
    dur_s = (t1 - t0) / 1e9
    expected = round(jobs * dur_s / period_s)
    print(json.dumps({"bench": "mesh_throughput", "regions": nregions, "jobs": jobs,
                      "period_s": period_s, "duration_s": dur_s,
                      "firings_per_s": round(started_in / dur_s, 1),
                      "due": expected, "claimed": due_in, "not_started": not_started,
                      "p50_ms": round(pct(lateness_ms, 50), 3) if lateness_ms else None,
                      "p99_ms": round(pct(lateness_ms, 99), 3) if lateness_ms else None,
                      "max_ms": round(max(lateness_ms), 3) if lateness_ms else None,
                      "early": early, "by_node": nodes}, separators=(",", ":")))

{"gap": failover_gap, "check": failover_check, "summary": summarize_failover,
 "create": create, "throughput": throughput}[sys.argv[1]](sys.argv[2:])
PY
py() { python3 "$work/meshbench.py" "$@"; }

# ---- failover gap ---------------------------------------------------------------------

# The runs of every failover job, as JSON files in DIR, read through a us-east node's API
# (a region's API answers for its own jobs; one of its two nodes may be down).
fetch_runs() {
  local dir=$1 i ep ok
  mkdir -p "$dir"
  for i in $(seq -w 1 $failover_jobs); do
    ok=0
    for ep in $(state '.nodes[] | select(.region == "us-east") | .endpoint'); do
      if "$m" --endpoint "$ep" --output json runs list --job "regions/us-east/jobs/fo-$i" \
          --limit 10000 >"$dir/fo-$i.json" 2>/dev/null; then
        ok=1; break
      fi
    done
    [ $ok = 1 ] || { note "runs list fo-$i failed on every us-east node"; echo '[]' >"$dir/fo-$i.json"; }
  done
}

failover() {
  local ttl=$1
  note "failover: lease TTL ${ttl}s, $kills SIGKILLs of the shard-0 owner, $failover_jobs jobs every 1s"
  "$mesh" up --dir "$meshdir" --lease-ttl-s "$ttl" --shards "$shards" -- --runs-retained 10000 >/dev/null
  local ep i
  ep=$(state '.nodes[0].endpoint')
  for i in $(seq -w 1 $failover_jobs); do
    "$m" --endpoint "$ep" jobs create --region us-east --id "fo-$i" --every 1s --noop >/dev/null
  done
  sleep 5   # steady firing before the first kill
  local t_first
  t_first=$(now_ns)
  : >"$work/rounds.jsonl"
  local round owner epoch pid st t_kill t_take new_owner new_epoch s deadline
  for round in $(seq 1 "$kills"); do
    s=$(cluster_status) || { note "no node answers cluster status"; return 1; }
    owner=$(jq -r '.shards[] | select(.shard == 0) | .node' <<<"$s")
    epoch=$(jq -r '.shards[] | select(.shard == 0) | .epoch' <<<"$s")
    [ -n "$owner" ] && [ "$owner" != null ] || { note "shard 0 has no owner"; return 1; }
    pid=$(state ".nodes[] | select(.node == \"$owner\") | .pid")
    st=$(state ".nodes[] | select(.node == \"$owner\") | .start")
    # Only a process this mesh started, checked by its start time.
    stat=$(cat "/proc/$pid/stat"); stat=${stat##*) }; set -- $stat
    [ "${20}" = "$st" ] || { note "pid $pid is not $owner any more"; return 1; }
    t_kill=$(now_ns)
    kill -KILL "$pid"
    # Wait for a new owner (bounded), asking the surviving nodes.
    deadline=$((SECONDS + takeover_s_max)); new_owner=; t_take=
    while [ $SECONDS -lt $deadline ]; do
      s=$(cluster_status) || true
      new_owner=$(jq -r '.shards[]? | select(.shard == 0) | .node' <<<"$s" 2>/dev/null || true)
      new_epoch=$(jq -r '.shards[]? | select(.shard == 0) | .epoch' <<<"$s" 2>/dev/null || true)
      if [ -n "$new_owner" ] && [ "$new_owner" != null ] && [ "$new_owner" != "$owner" ]; then
        t_take=$(now_ns); break
      fi
      sleep 0.05
    done
    # Let the new owner fire a few seconds, then read the runs and restart the killed node.
    sleep 3
    fetch_runs "$work/runs-$round"
    local gap
    gap=$(py gap "$t_kill" "$epoch" "$work/runs-$round"/*.json)
    jq -c --arg killed "$owner" --arg new "${new_owner:-}" --argjson e "$epoch" \
      --argjson take "$( [ -n "$t_take" ] && echo $(( (t_take - t_kill) / 1000000 )) || echo null)" \
      --argjson t_kill "$t_kill" \
      '. + {killed: $killed, new_owner: $new, old_epoch: $e, takeover_ms: $take, t_kill_ns: $t_kill}' \
      <<<"$gap" >>"$work/rounds.jsonl"
    note "round $round: killed $owner (epoch $epoch), new owner ${new_owner:-none}: $(tail -1 "$work/rounds.jsonl")"
    "$mesh" restart "$owner" --dir "$meshdir" 2>/dev/null
    deadline=$((SECONDS + rejoin_s_max))
    until [ "$(cluster_status | jq '.nodes | length')" -ge 4 ]; do
      [ $SECONDS -lt $deadline ] || { note "$owner did not rejoin"; return 1; }
      sleep 0.2
    done
    sleep 3   # steady again
  done
  local t_last
  t_last=$(now_ns)
  # Dispatches a killed node had taken are redelivered after the visibility timeout
  # (serve's --visibility-timeout-s, 30 s): wait it out before the final reading.
  note "waiting ${settle_s}s for redeliveries before the final reading"
  sleep "$settle_s"
  local t_read
  t_read=$(now_ns)
  fetch_runs "$work/runs-final"
  cluster_status >"$work/status-final.json" || true
  save_logs "failover-$ttl"
  # Exactly once and nothing lost, over the firings scheduled from the first kill to the
  # last restart (minus the firings of the last 5 s, which may still be under way).
  py check "$t_first" "$((t_last - 5000000000))" "$t_read" "$work/runs-final"/*.json >"$work/check.json"
  py summary "$ttl" "$kills" "$work/rounds.jsonl" "$work/check.json" \
    | jq -c --argjson load "$(cut -d' ' -f1 /proc/loadavg)" '. + {loadavg_1m: $load}'
  "$mesh" down --dir "$meshdir" >/dev/null 2>&1
}

# ---- throughput -----------------------------------------------------------------------

venv=${XDG_CACHE_HOME:-$HOME/.cache}/meridian-bench/venv
setup_python() {
  if ! "$venv/bin/python" -c 'import grpc, grpc_tools, redis' 2>/dev/null; then
    note "installing grpcio, grpcio-tools and redis (PyPI) into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q grpcio grpcio-tools redis
  fi
  mkdir -p "$work/gen"
  "$venv/bin/python" -m grpc_tools.protoc -I proto --python_out="$work/gen" \
    --grpc_python_out="$work/gen" proto/meridian/v1/meridian.proto
}

throughput() {
  setup_python
  note "throughput: $jobs no-op jobs every ${period_s}s over 3 regions, ${duration_s}s"
  "$mesh" up --dir "$meshdir" --shards "$shards" >/dev/null
  local targets=() r anchor t_created
  for r in us-east eu-west ap-south; do
    targets+=("$r=$(state ".nodes[] | select(.region == \"$r\") | .endpoint" | head -1)")
  done
  # Anchors spread evenly over one period from now: firing is uniform from the start.
  anchor=$(( $(now_ns) / 1000000000 * 1000000000 ))
  local t_c0=$(now_ns)
  "$venv/bin/python" "$work/meshbench.py" create "$work/gen" "$jobs" "$period_s" "$anchor" "${targets[@]}"
  t_created=$(now_ns)
  note "created $jobs jobs in $(( (t_created - t_c0) / 1000000 )) ms"
  # Warm-up: every job seen by the owner and fired at least once.
  sleep $((period_s + 5))
  local t0 t1 load
  t0=$(now_ns)
  sleep "$duration_s"
  t1=$(now_ns)
  load=$(cut -d' ' -f1 /proc/loadavg)   # the machine is shared: say how busy it was
  sleep 10   # let firings due before t1 start (a late one still counts, as late)
  "$venv/bin/python" "$work/meshbench.py" throughput "$(state .redis.url)" "$t0" "$t1" "$jobs" "$period_s" 3 \
    | jq -c --argjson create_ms "$(( (t_created - t_c0) / 1000000 ))" --argjson shards "$shards" \
        --argjson load "$load" '. + {shards: $shards, create_ms: $create_ms, loadavg_1m: $load}'
  save_logs throughput
  "$mesh" down --dir "$meshdir" >/dev/null 2>&1
}

if want failover; then
  if [ "$which" = failover ] && [ -n "${2:-}" ]; then
    failover "$2"
  else
    failover 2
    failover 3
  fi
fi
want throughput && throughput
exit 0
