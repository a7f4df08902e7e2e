# shellcheck shell=bash disable=SC2154,SC2034
# Sourced by `scripts/webhook-bench flood [DELIVERIES]` once its engine is ready (it provides
# work, url, port, auth, db, db_url, pid and flood; its cleanup stops the servers started here,
# recorder and git_server). One project's flood against another project's single push
# (issue 15): see the header of scripts/webhook-bench.

secret=${secret:-bench-webhook-secret}
q() { psql -qAtX -F ' ' "$(db_url "$db")" -c "$1"; }

# The provider's status API: records every commit status with the time it arrived.
cat > "$work/status_api.py" <<'PY'
import http.server, json, sys, threading, time
out = open(sys.argv[1], "a", buffering=1)
lock = threading.Lock()
class Recorder(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        at = time.time()
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            state = json.loads(body).get("state", "?")
        except ValueError:
            state = "?"
        with lock:
            out.write(f"{at:.6f} {self.path} {state}\n")
        reply = b"{}"
        self.send_response(201)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
print(server.server_address[1], flush=True)
server.serve_forever()
PY
: > "$work/statuses.log"
python3 "$work/status_api.py" "$work/statuses.log" > "$work/status_api.port" &
recorder=$!
for _ in $(seq 100); do [[ -s $work/status_api.port ]] && break; sleep 0.05; done
api_url="http://127.0.0.1:$(cat "$work/status_api.port")"

# The repositories, served over git's smart HTTP: lighttpd running `git http-backend` for
# everything under $work/repos. A local path would do for the engine (root) but not for the
# runners, which check out as the step user and are refused root's repositories by libgit2's
# ownership check. lighttpd cannot listen on a port the OS picks (port 0 means its default),
# so it is handed a socket already listening on one, as systemd's socket activation does
# (fd 3, LISTEN_PID its own pid: the launcher execs it); nothing can take the port between.
mkdir -p "$work/repos" "$work/git-http"
cat > "$work/git-http/lighttpd.conf" <<CONF
server.modules = ("mod_alias", "mod_cgi", "mod_setenv")
server.document-root = "$work/git-http"
server.systemd-socket-activation = "enable"
server.errorlog = "$work/git-http/error.log"
alias.url = ("/git" => "$(git --exec-path)/git-http-backend")
\$HTTP["url"] =~ "^/git" {
  cgi.assign = ("" => "")
  setenv.add-environment = ("GIT_PROJECT_ROOT" => "$work/repos", "GIT_HTTP_EXPORT_ALL" => "", "GIT_CONFIG_NOSYSTEM" => "1")
}
CONF
cat > "$work/git-http/launch.py" <<'PY'
import os, socket, sys
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(128)
with open(sys.argv[2], "w") as f:
    f.write(f"{listener.getsockname()[1]}\n")
# Python's descriptors are close-on-exec (and this one may already be fd 3).
if listener.fileno() != 3:
    os.dup2(listener.fileno(), 3)
os.set_inheritable(3, True)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
os.execvp("lighttpd", ["lighttpd", "-D", "-f", sys.argv[1]])
PY
python3 "$work/git-http/launch.py" "$work/git-http/lighttpd.conf" "$work/git-http/port" \
  > "$work/git-http/stderr.log" 2>&1 &
git_server=$!
for _ in $(seq 100); do [[ -s $work/git-http/port ]] && break; sleep 0.05; done
git_url="http://127.0.0.1:$(cat "$work/git-http/port")/git"

# Project a's pipeline does real work (each run's stage holds a slot for 5 s); b's echoes.
declare -A shas
for side in a b; do
  git init -q --bare -b main "$work/repos/$side.git"
  git init -q -b main "$work/$side-clone"
  if [[ $side == a ]]; then step="sleep 5"; else step="echo quiet ran"; fi
  printf 'name: %s\non:\n  push:\n    branches: [main]\nstages:\n  - name: build\n    steps:\n      - %s\n' \
    "$side-pipeline" "$step" > "$work/$side-clone/.gantry.yaml"
  git -C "$work/$side-clone" -c user.name=b -c user.email=b@x add -A
  git -C "$work/$side-clone" -c user.name=b -c user.email=b@x commit -qm "$side"
  git -C "$work/$side-clone" push -q "$work/repos/$side.git" HEAD:refs/heads/main
  shas[$side]=$(git -C "$work/$side-clone" rev-parse HEAD)
  # Fetched as the runners will, before anything is registered with it.
  served=
  for _ in $(seq 100); do
    git ls-remote "$git_url/$side.git" main >/dev/null 2>&1 && { served=1; break; }
    sleep 0.1
  done
  if [[ -z $served ]]; then
    echo "the git server does not serve $git_url/$side.git:" >&2
    tail -n 20 "$work/git-http/stderr.log" "$work/git-http/error.log" >&2 2>/dev/null || true
    exit 1
  fi
  curl -sf "${auth[@]}" -H 'content-type: application/json' "$url/api/v1/projects/$side/repositories" \
    -d "{\"provider\":\"github\",\"full_name\":\"$side/app\",\"clone_url\":\"$git_url/$side.git\",\"webhook_secret\":\"$secret\",\"token_secret\":\"gh-token\",\"api_url\":\"$api_url\"}" >/dev/null
  curl -sf "${auth[@]}" -X PUT "$url/api/v1/projects/$side/secrets/gh-token" --data-binary ghp_bench_token >/dev/null
  printf '{"ref":"refs/heads/main","before":"%s","after":"%s","created":true,"deleted":false,"head_commit":{"id":"%s","message":"bench"},"commits":[{"id":"%s","added":["a"],"modified":[],"removed":[]}],"repository":{"full_name":"%s/app","clone_url":"%s"},"sender":{"login":"bench"}}' \
    "0000000000000000000000000000000000000000" "${shas[$side]}" "${shas[$side]}" "${shas[$side]}" "$side" "$git_url/$side.git" > "$work/$side.json"
done

# The flood: DELIVERIES signed pushes over 32 keep-alive connections, then b's push on a
# connection opened beforehand. Times are this machine's clock, as PostgreSQL's now() is.
cat > "$work/flood.py" <<'PY'
import asyncio, hashlib, hmac, json, sys, time
port, secret, n = int(sys.argv[1]), sys.argv[2].encode(), int(sys.argv[3])
body_a, body_b = open(sys.argv[4], "rb").read(), open(sys.argv[5], "rb").read()
b_key = sys.argv[6]
def request(body, key):
    sig = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    head = (f"POST /hooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"X-GitHub-Event: push\r\nX-GitHub-Delivery: {key}\r\nX-Hub-Signature-256: {sig}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body
async def answer(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    fields = {}
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        fields[k.strip().lower()] = v.strip()
    if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(int(fields.get(b"content-length", b"0")))
    return status
async def main():
    statuses = {}
    todo = iter(range(n))
    async def worker():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in todo:
            writer.write(request(body_a, f"flood-a-{i}"))
            s = await answer(reader)
            statuses[s] = statuses.get(s, 0) + 1
        writer.close()
    b_reader, b_writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.time()
    await asyncio.gather(*(worker() for _ in range(32)))
    flooded = time.time()
    b_writer.write(request(body_b, b_key))
    b_status = await answer(b_reader)
    answered = time.time()
    print(json.dumps({"a_statuses": statuses, "a_start": start, "a_end": flooded,
                      "b_sent": flooded, "b_answered": answered, "b_status": b_status}))
asyncio.run(main())
PY

# Waits until b's stage is running (its runner called in) and b's pending status was posted
# after the push was sent, at most 300 s; then prints the timeline of b's push (delivery key
# $1, sent at $2).
measure() {
  local key=$1 sent=$2 deadline=$((SECONDS + 300)) started pending snapshot b
  while ((SECONDS < deadline)); do
    started=$(q "SELECT count(*) FROM stage_runs s JOIN runs r ON r.id = s.run_id JOIN deliveries d ON d.id = r.delivery_id
                  WHERE d.delivery_key = '$key' AND s.contacted_at IS NOT NULL")
    pending=$(awk -v p="/repos/b/app/statuses/${shas[b]}" -v t="$sent" \
      '$2 == p && $3 == "pending" && $1 >= t {print $1; exit}' "$work/statuses.log")
    if [[ $started == 1 && -n $pending ]]; then break; fi
    sleep 0.1
  done
  snapshot=$(q "SELECT (SELECT count(*) FROM deliveries WHERE status = 'received'),
                       (SELECT count(*) FROM runs r JOIN pipelines p ON p.id = r.pipeline_id WHERE p.name = 'a-pipeline'),
                       (SELECT count(*) FROM runs r JOIN pipelines p ON p.id = r.pipeline_id
                          WHERE p.name = 'a-pipeline' AND r.status = 'queued'),
                       (SELECT count(*) FROM stage_runs s JOIN runs r ON r.id = s.run_id JOIN pipelines p ON p.id = r.pipeline_id
                          WHERE p.name = 'a-pipeline' AND s.status = 'running'),
                       (SELECT string_agg(status || ':' || n, ',') FROM (SELECT r.status::text, count(*) AS n
                          FROM runs r JOIN pipelines p ON p.id = r.pipeline_id WHERE p.name = 'a-pipeline' GROUP BY 1) x)")
  b=$(q "SELECT extract(epoch FROM d.received_at), extract(epoch FROM d.processed_at), extract(epoch FROM r.created_at),
                extract(epoch FROM r.started_at), extract(epoch FROM s.started_at), extract(epoch FROM s.contacted_at),
                (SELECT count(*) FROM deliveries a WHERE a.delivery_key LIKE 'flood-a-%' AND a.received_at <= d.received_at
                   AND (a.processed_at IS NULL OR a.processed_at > d.received_at)),
                (SELECT count(*) FROM deliveries a WHERE a.delivery_key LIKE 'flood-a-%'
                   AND a.processed_at IS NOT NULL AND a.processed_at < d.processed_at)
         FROM deliveries d JOIN runs r ON r.delivery_id = d.id JOIN stage_runs s ON s.run_id = r.id
         WHERE d.delivery_key = '$key'")
  python3 "$work/timeline.py" "$sent" "${pending:-}" "$snapshot" "$b"
}

cat > "$work/timeline.py" <<'PY'
import sys
sent = float(sys.argv[1])
pending = float(sys.argv[2]) if sys.argv[2] else None
waiting, a_runs, a_queued, a_stages, a_statuses = sys.argv[3].split()
fields = sys.argv[4].split()
if len(fields) < 8:
    print("   b's run did not start within 300 s")
    sys.exit(0)
received, processed, created, run_started, claimed, contacted, queued_ahead, a_before = fields
rel = lambda t: f"{float(t) - sent:+.3f} s"
print(f"   a's deliveries stored before b's and not yet processed when b's arrived: {queued_ahead}; "
      f"a's deliveries processed before b's: {a_before}")
print(f"   from b's push sent: delivery stored {rel(received)}, processed {rel(processed)}, run created {rel(created)}, "
      f"run running {rel(run_started)}, stage claimed {rel(claimed)}, runner's first call {rel(contacted)}, "
      f"pending status at the API {rel(pending) if pending else 'not seen within 300 s'}")
print(f"   then: deliveries waiting {waiting}; a's runs: {a_runs} created, {a_queued} queued, {a_stages} stages running (runs by status: {a_statuses})")
PY
cat > "$work/summary.py" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
n = sum(d["a_statuses"].values())
took = d["a_end"] - d["a_start"]
late = 1000 * (d["b_answered"] - d["b_sent"])
print(f"   a: {n} pushes sent in {took:.2f} s ({n / took:.0f}/s), answers {d['a_statuses']}; "
      f"b: answered {d['b_status']} in {late:.1f} ms")
PY
sent_at() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["b_sent"])' "$1"; }

echo "== flood: $flood pushes to project a's repository, then one push to project b's"
uptime
python3 "$work/flood.py" "$port" "$secret" "$flood" "$work/a.json" "$work/b.json" flood-b > "$work/flood.json"
python3 "$work/summary.py" "$work/flood.json"
measure flood-b "$(sent_at "$work/flood.json")"
uptime

# Second case: a's deliveries all processed, a's runs queued behind the per-project limit and
# a's stages holding the slots; b pushes again.
deadline=$((SECONDS + 600))
while ((SECONDS < deadline)) && [[ $(q "SELECT count(*) FROM deliveries WHERE status = 'received'") != 0 ]]; do
  sleep 0.5
done
echo "== a's deliveries all processed; one more push to project b's repository"
python3 "$work/flood.py" "$port" "$secret" 0 "$work/a.json" "$work/b.json" flood-b2 > "$work/flood2.json"
measure flood-b2 "$(sent_at "$work/flood2.json")"
uptime
echo "engine RSS (KiB): $(awk '/VmHWM/ {print $2}' /proc/"$pid"/status) peak"
