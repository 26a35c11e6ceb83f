#!/usr/bin/env bash
# Deploys customer-service, transaction-service, notification-service and the console to IBM Cloud
# Code Engine (the services of deploy/services.txt).
# Idempotent: a first run creates what is missing, a re-run updates the applications to IMAGE_TAG.
# Walk-through: deploy/codeengine/README.md. Tested with a stand-in CLI: deploy/tests/codeengine_test.sh.
#
# Required environment:
#   IBMCLOUD_REGION          e.g. us-south
#   IBMCLOUD_RESOURCE_GROUP  e.g. Default
#   ICR_NAMESPACE            Container Registry namespace the images were pushed to
#   CE_PROJECT               Code Engine project (created when missing)
#   ES_INSTANCE              Event Streams service instance (Standard or Enterprise plan)
#   IMAGE_TAG                tag of the images <ICR_REGISTRY>/<ICR_NAMESPACE>/<service>:<IMAGE_TAG>
# Optional:
#   IBMCLOUD_API_KEY         log in with it (else an existing `ibmcloud login` session is used)
#   ICR_REGISTRY (icr.io)    ICR_REGION: the registry's region (default global for icr.io; required
#                            for a regional registry, e.g. us-south for us.icr.io). IAM policies for the
#                            global registry carry --attributes geography=global (a geography, not a
#                            region), for a regional one --region ICR_REGION (IBM's Registry docs)
#   ICR_KEEP_IMAGES (3)      the registry retention policy: the newest N images of each repository in
#                            ICR_NAMESPACE are kept, older ones deleted (`cr retention-policy-set`; the
#                            free plan holds 500 MB and refuses pushes beyond); "all" keeps every image
#   CE_REGISTRY_SECRET (icr-pull): made once from the API key of the service ID
#                            <CE_PROJECT>-registry-pull, which may only read (Reader) ICR_NAMESPACE
#   KAFKA_TOPIC_PARTITIONS (3)  ES_TOPIC_WAIT (60): seconds to wait for new topics to appear
#   ES_FIX_TOPIC_CONFIGS (false)  true: an existing topic whose retention or cleanup policy differ from
#                            deploy/topics.txt is updated (`es topic-update --config`); false: reported
#   CE_MIN_SCALE (1)  CE_MAX_SCALE (2)  CE_CPU (0.5)  CE_MEMORY (1G)
#   CE_LIVENESS_DELAY (30)   seconds before the first liveness probe (start-up: migrations, first
#                            connections); /healthz answers as soon as the HTTP server listens
#   CE_APP_WAIT (240)        seconds each application create/update/bind waits for readiness
#                            (--wait --wait-timeout); an application not ready by then fails the deploy
#                            with its status (`ce application get`) and last log lines (`ce application logs`)
#   CE_ROLLOUT_BUDGET (1200) seconds all the application waits together may take: checked up front
#                            (applications x CE_APP_WAIT must fit), and no wait outlasts it. Below the
#                            deploy job's timeout (.github/workflows/deploy.yml: 30 minutes)
#   CE_LOG_LINES (50)        log lines shown per container of an application that did not become ready
#   POSTGRES_INSTANCE              an IBM Cloud Databases for PostgreSQL instance: when set, each service with a
#                            database is bound to it (`ce application bind --prefix DATABASE`, once; the
#                            services read DATABASE_CONNECTION, see crates/platform/src/store/db_binding.rs) and
#                            uses its own database DATABASE_NAME=<service with _> (customer_service, ...),
#                            created beforehand (deploy/codeengine/README.md); no <service>-db secret
#   ES_BROKERS               the instance's SASL brokers, comma-separated (default: `es cluster --json`)
#   ES_ROTATE_KEYS (false)   true: give every service a new Event Streams API key (old keys stay valid
#                            until deleted: ibmcloud iam service-api-keys <CE_PROJECT>-<service>)
#   SERVICES                 subset to deploy, space-separated (default: all of deploy/services.txt)
# Secrets (Code Engine secrets, passed to the applications with --env-from-secret). When the variable
# is set the secret is created or updated from it; when it is not, the secret must already exist:
#   <service>-db       (without POSTGRES_INSTANCE) DATABASE_URL   from DATABASE_URL_CUSTOMER_SERVICE, DATABASE_URL_TRANSACTION_SERVICE,
#                                     DATABASE_URL_NOTIFICATION_SERVICE (services with a database in
#                                     deploy/services.txt; the console has none)
#                      DATABASE_CA_CERT_BASE64 (optional, into every <service>-db secret when set): the
#                                     database's CA, base64 (certificate_base64 of its credentials), for
#                                     sslmode=verify-full
#   notification-smtp  SMTP_URL, MAIL_FROM (notification-service only)
#   api-keys           API_KEYS: attached to every application (required: three are public and
#                      every one refuses to listen beyond loopback without keys). Neither set nor existing: made here, outside CI, with a key "ops" of every
#                      scope (printed once, stored as its SHA-256 digest) and the console's read key
#   console-api-key    CONSOLE_API_KEY: the key the console reads the services with (scopes
#                      customers:read, transactions:read, notifications:read); made with api-keys
#   <service>-kafka    EVENT_STREAMS_KAFKA_BROKERS_SASL, EVENT_STREAMS_USER, EVENT_STREAMS_PASSWORD: made
#                      by this script from the service's own service ID <CE_PROJECT>-<service>, whose
#                      IAM policies are event-streams-access.txt (least privilege; no Manager)
# The console reads the other services' APIs at their application URLs (CUSTOMER_SERVICE_URL, ...),
# looked up when it is deployed, so those applications must exist by then (they come first): the
# public URL of a public application, the project URL (`--output project-url`) of one with project
# visibility; an empty URL stops the deploy.
# Visibility (`--visibility`, the table visibility_of below): public only what people and clients
# must reach, each with API keys: customer-service and transaction-service (the API) and the
# console (the live view); notification-service has project visibility (only the console reads it,
# inside the project).
# Topics: created here with the deployer's login (Manager on the instance), never by the services.
# Needs python3 (reads the CLI's JSON answers).
set -Eeuo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
deploy_dir=$(cd "$here/.." && pwd)
step_name="start"

die() {
  printf 'deploy.sh: error: %s\n' "$*" >&2
  exit 1
}
on_error() {
  printf 'deploy.sh: FAILED during step "%s": [%s] exited with %s. Nothing after it was run.\n' \
    "$step_name" "$2" "$1" >&2
}
trap 'on_error $? "$BASH_COMMAND"' ERR
step() {
  step_name=$*
  printf '\n==> %s\n' "$*"
}
run() { # print, then run, an ibmcloud command; stop at its failure (secrets never are arguments)
  printf '    $ ibmcloud %s\n' "$*"
  local rc=0
  ibmcloud "$@" || rc=$?
  if ((rc != 0)); then
    printf 'deploy.sh: FAILED during step "%s": [ibmcloud %s] exited with %s. Nothing after it was run.\n' \
      "$step_name" "$*" "$rc" >&2
    exit "$rc"
  fi
}
quietly() { # run an ibmcloud query whose output is only a yes/no answer
  ibmcloud "$@" >/dev/null 2>&1
}

# ---------------------------------------------------------------------------------- configuration
missing=()
for var in IBMCLOUD_REGION IBMCLOUD_RESOURCE_GROUP ICR_NAMESPACE CE_PROJECT ES_INSTANCE IMAGE_TAG; do
  [[ -n ${!var:-} ]] || missing+=("$var")
done
((${#missing[@]} == 0)) || die "missing required variable(s): ${missing[*]} (see the header of $0)"
command -v ibmcloud >/dev/null || die "the ibmcloud CLI is not on PATH (https://cloud.ibm.com/docs/cli)"
command -v python3 >/dev/null || die "python3 is needed to read the CLI's JSON answers"

ICR_REGISTRY=${ICR_REGISTRY:-icr.io}
if [[ -z ${ICR_REGION:-} ]]; then
  [[ $ICR_REGISTRY == icr.io ]] || die "set ICR_REGION to the IAM region of $ICR_REGISTRY (e.g. us-south for us.icr.io)"
  ICR_REGION=global
fi
if [[ $ICR_REGISTRY == icr.io ]]; then
  [[ $ICR_REGION == global ]] || die "icr.io is the global registry: ICR_REGION must be global (or unset), not '$ICR_REGION'"
else
  [[ $ICR_REGION != global ]] || die "$ICR_REGISTRY is a regional registry: set ICR_REGION to its region, not global"
fi
CE_REGISTRY_SECRET=${CE_REGISTRY_SECRET:-icr-pull}
KAFKA_TOPIC_PARTITIONS=${KAFKA_TOPIC_PARTITIONS:-3}
# Requests per second per client (an API key, else an address) and the burst; 429 past it.
RATE_LIMIT_PER_SECOND=${RATE_LIMIT_PER_SECOND:-50}
RATE_LIMIT_BURST=${RATE_LIMIT_BURST:-100}
# Code Engine's hops before the app (its ingress, activator and the in-pod queue-proxy on
# loopback) have private addresses; each appends the one it saw to X-Forwarded-For, so the
# client is the right-most address outside these networks.
TRUSTED_PROXIES=${TRUSTED_PROXIES:-127.0.0.1,::1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16}
ES_TOPIC_WAIT=${ES_TOPIC_WAIT:-60}
ICR_KEEP_IMAGES=${ICR_KEEP_IMAGES:-3}
[[ $ICR_KEEP_IMAGES =~ ^[1-9][0-9]*$ || ${ICR_KEEP_IMAGES,,} == all ]] ||
  die "ICR_KEEP_IMAGES must be a whole number of at least 1, or all, not '$ICR_KEEP_IMAGES'"
[[ ${ICR_KEEP_IMAGES,,} == all ]] && ICR_KEEP_IMAGES=All
CE_APP_WAIT=${CE_APP_WAIT:-240}
CE_ROLLOUT_BUDGET=${CE_ROLLOUT_BUDGET:-1200}
CE_LOG_LINES=${CE_LOG_LINES:-50}
POSTGRES_INSTANCE=${POSTGRES_INSTANCE:-}
CE_MIN_SCALE=${CE_MIN_SCALE:-1}
CE_MAX_SCALE=${CE_MAX_SCALE:-2}
CE_CPU=${CE_CPU:-0.5}
CE_MEMORY=${CE_MEMORY:-1G}
CE_LIVENESS_DELAY=${CE_LIVENESS_DELAY:-30}
ES_ROTATE_KEYS=${ES_ROTATE_KEYS:-false}
ES_FIX_TOPIC_CONFIGS=${ES_FIX_TOPIC_CONFIGS:-false}
[[ $ES_FIX_TOPIC_CONFIGS == true || $ES_FIX_TOPIC_CONFIGS == false ]] ||
  die "ES_FIX_TOPIC_CONFIGS must be true or false, not '$ES_FIX_TOPIC_CONFIGS'"
for var in KAFKA_TOPIC_PARTITIONS ES_TOPIC_WAIT CE_MIN_SCALE CE_MAX_SCALE CE_LIVENESS_DELAY CE_APP_WAIT \
  CE_ROLLOUT_BUDGET CE_LOG_LINES; do
  [[ ${!var} =~ ^[0-9]+$ ]] || die "$var must be a whole number, not '${!var}'"
done

declare -A port_of=() database_of=()
all_services=()
while read -r name port database; do
  [[ -z $name || $name == \#* ]] && continue
  port_of[$name]=$port
  database_of[$name]=$database
  all_services+=("$name")
done <"$deploy_dir/services.txt"
read -r -a services <<<"${SERVICES:-${all_services[*]}}"
for service in "${services[@]}"; do
  [[ -n ${port_of[$service]:-} ]] || die "unknown service '$service' in SERVICES (known: ${all_services[*]})"
done
# The whole rollout fits the budget, checked before anything changes: every application may wait
# CE_APP_WAIT once (a first bind-and-create waits more, but never past the budget's end).
((CE_APP_WAIT >= 30)) || die "CE_APP_WAIT must be at least 30 seconds, not $CE_APP_WAIT"
((${#services[@]} * CE_APP_WAIT <= CE_ROLLOUT_BUDGET)) ||
  die "${#services[@]} applications x CE_APP_WAIT=${CE_APP_WAIT}s do not fit CE_ROLLOUT_BUDGET=${CE_ROLLOUT_BUDGET}s"
# Who may reach each application: public (the internet, with API keys) or project (only the
# project's own components). `private` would need a project that supports it and is not used.
declare -A visibility_of=([customer-service]=public [transaction-service]=public
  [notification-service]=project [console]=public)
for service in "${services[@]}"; do
  [[ -n ${visibility_of[$service]:-} ]] || die "no visibility chosen for '$service' (visibility_of in $0)"
done
# The registry's IAM scope: the global registry is a geography, a regional one a region.
if [[ $ICR_REGION == global ]]; then
  registry_scope=(--attributes geography=global)
else
  registry_scope=(--region "$ICR_REGION")
fi
declare -A access_of=()
while read -r name type resource role; do
  [[ -z $name || $name == \#* ]] && continue
  access_of[$name]+="$type $resource $role"$'\n'
done <"$here/event-streams-access.txt"
for service in "${services[@]}"; do
  [[ -n ${access_of[$service]:-} ]] || die "no Event Streams access for '$service' in $here/event-streams-access.txt"
done
# deploy/topics.txt: every topic (dead letters included) and its configs, generated from
# crates/contracts/src/topics.rs (retention, cleanup policy: the services check the same table).
topics=()
declare -A configs_of=()
while read -r topic configs; do
  [[ -z $topic || $topic == \#* ]] && continue
  [[ -n $configs ]] || die "topic $topic has no configs in $deploy_dir/topics.txt"
  topics+=("$topic")
  configs_of[$topic]=$configs
done <"$deploy_dir/topics.txt"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
secret_file() { # name line... -> a 0600 file of the lines, no final newline (values never reach argv or the log)
  local file="$scratch/$1"
  shift
  (umask 077 && IFS=$'\n' && printf '%s' "$*" >"$file")
  printf '%s' "$file"
}

# json QUERY [ARG]: reads a CLI answer (JSON) on stdin and prints what QUERY asks for, one per line:
#   apikey            the "apikey" of an `iam service-api-key-create --file` answer
#   brokers           host:port of every broker of `es cluster --json`, comma-separated
#   bindings PREFIX   the service bindings in `ce application get --output json` whose environment
#                     variable prefix is PREFIX: their names ("-" for a binding of the previous
#                     implementation, which has none and can only be removed with `unbind --all`)
# Bindings are looked for anywhere in the document (objects with a "prefix", or
# "environmentVariablePrefix"/"envPrefix", key), as IBM does not document where they appear in it.
json() {
  python3 -c '
import json, sys

query, arg = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
doc = json.load(sys.stdin)

def objects(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from objects(value)

def key(obj, *names):
    wanted = {n.lower().replace("_", "") for n in names}
    for k, v in obj.items():
        if k.lower().replace("_", "") in wanted:
            return v
    return None

if query == "apikey":
    print(doc["apikey"])
elif query == "brokers":
    found = ["%s:%s" % (o["host"], o["port"]) for o in objects(doc) if "host" in o and "port" in o]
    print(",".join(dict.fromkeys(found)))
elif query == "topic-drift":
    # The answer of "es topic NAME --json": the Admin REST API topic object; its "configs" map when present,
    # else its camelCase fields (retentionMs, cleanupPolicy). Prints "KEY EXPECTED ACTUAL" per
    # config of the arguments (KEY=VALUE) that differs.
    configs = doc.get("configs") if isinstance(doc.get("configs"), dict) else {}
    for pair in sys.argv[2:]:
        name, _, expected = pair.partition("=")
        camel = name.split(".")[0] + "".join(w.title() for w in name.split(".")[1:])
        actual = configs.get(name, doc.get(camel))
        actual = "<unset>" if actual is None else str(actual)
        if actual != expected:
            print(name, expected, actual)
elif query == "bindings":
    for o in objects(doc):
        if key(o, "prefix", "environmentVariablePrefix", "envPrefix") == arg:
            print(key(o, "name") or "-")
else:
    sys.exit(f"unknown query {query}")
' "$@"
}

# ---------------------------------------------------------------------------------------- steps
step "log in and target region $IBMCLOUD_REGION, resource group $IBMCLOUD_RESOURCE_GROUP"
if [[ -n ${IBMCLOUD_API_KEY:-} ]]; then
  run login -r "$IBMCLOUD_REGION" -g "$IBMCLOUD_RESOURCE_GROUP" # reads IBMCLOUD_API_KEY itself
else
  printf '    $ ibmcloud target -r %s -g %s\n' "$IBMCLOUD_REGION" "$IBMCLOUD_RESOURCE_GROUP"
  ibmcloud target -r "$IBMCLOUD_REGION" -g "$IBMCLOUD_RESOURCE_GROUP" ||
    die "could not target $IBMCLOUD_REGION / $IBMCLOUD_RESOURCE_GROUP: run 'ibmcloud login' first or set IBMCLOUD_API_KEY"
fi

step "CLI plug-ins"
for plugin in code-engine event-streams container-registry; do
  if quietly plugin show "$plugin"; then
    echo "    $plugin: installed"
  else
    run plugin install "$plugin" -f
  fi
done

step "Code Engine project $CE_PROJECT"
if quietly ce project get --name "$CE_PROJECT"; then
  echo "    exists"
else
  run ce project create --name "$CE_PROJECT"
fi
run ce project select --name "$CE_PROJECT"

grant() { # service-id role service-name scope-flag...: one IAM policy; an existing one is fine
  local sid=$1 role=$2 service_name=$3 args out
  shift 3
  args=(iam service-policy-create "$sid" --roles "$role" --service-name "$service_name" "$@")
  printf '    $ ibmcloud %s\n' "${args[*]}"
  if ! out=$(ibmcloud "${args[@]}" 2>&1); then
    grep -qi 'already exists' <<<"$out" || { printf '%s\n' "$out" >&2; die "could not grant $role on $service_name $* to $sid"; }
    echo "    already granted"
  fi
}

ensure_service_id() { # service-id description
  if quietly iam service-id "$1"; then
    echo "    service ID $1 exists"
  else
    run iam service-id-create "$1" --description "$2"
  fi
}

new_api_key() { # service-id purpose file: a new API key of the service ID, written to the 0600 file
  (umask 077 && : >"$3")
  run iam service-api-key-create "$1-$2-$(date -u +%Y%m%d%H%M%S)" "$1" \
    --description "$2 credential of $1 (deploy.sh)" --file "$3"
}

step "registry access $CE_REGISTRY_SECRET for $ICR_REGISTRY/$ICR_NAMESPACE (service ID with Reader)"
if quietly ce registry get --name "$CE_REGISTRY_SECRET"; then
  echo "    exists"
else
  # Not the deployer's own key: a service ID that may only pull from this namespace.
  registry_sid="$CE_PROJECT-registry-pull"
  ensure_service_id "$registry_sid" "pulls $ICR_REGISTRY/$ICR_NAMESPACE for Code Engine project $CE_PROJECT (deploy.sh)"
  grant "$registry_sid" Reader container-registry "${registry_scope[@]}" --resource-type namespace --resource "$ICR_NAMESPACE"
  key_file="$scratch/registry-api-key.json"
  new_api_key "$registry_sid" registry "$key_file"
  run ce registry create --name "$CE_REGISTRY_SECRET" --server "$ICR_REGISTRY" --username iamapikey \
    --password-from-json-file "$key_file"
fi

step "registry retention: the newest $ICR_KEEP_IMAGES images of each repository in $ICR_REGISTRY/$ICR_NAMESPACE"
# Every green run pushes four images tagged with the commit; without a policy they pile up until
# the free plan's 500 MB refuses pushes. The policy runs now and then daily; untagged images count.
run cr region-set "$ICR_REGION"
run cr retention-policy-set --images "$ICR_KEEP_IMAGES" --force "$ICR_NAMESPACE"

step "Event Streams topics on $ES_INSTANCE (${#topics[@]} topics, $KAFKA_TOPIC_PARTITIONS partitions each)"
# Creating topics needs Manager: the deployer's login does it; the services run with
# KAFKA_CREATE_TOPICS=false and Writer/Reader only. `es topic NAME` fails when NAME does not exist.
run es init --instance-name "$ES_INSTANCE"
created=()
drifted=()
for topic in "${topics[@]}"; do
  read -r -a pairs <<<"${configs_of[$topic]}"
  config_args=()
  for pair in "${pairs[@]}"; do config_args+=(--config "$pair"); done
  if answer=$(ibmcloud es topic "$topic" --json 2>/dev/null); then
    drift=$(json topic-drift "${pairs[@]}" <<<"$answer") || die "cannot read 'es topic $topic --json'"
    if [[ -z $drift ]]; then
      echo "    $topic exists"
      continue
    fi
    while read -r key expected actual; do
      echo "    WARNING: topic $topic has $key=$actual, expected $expected (deploy/topics.txt)"
    done <<<"$drift"
    if [[ $ES_FIX_TOPIC_CONFIGS == true ]]; then
      run es topic-update --name "$topic" "${config_args[@]}"
    else
      drifted+=("$topic")
    fi
  else
    run es topic-create --name "$topic" --partitions "$KAFKA_TOPIC_PARTITIONS" "${config_args[@]}"
    created+=("$topic")
  fi
done
if ((${#drifted[@]} > 0)); then
  echo "    WARNING: ${#drifted[@]} topic(s) keep configs that differ from deploy/topics.txt: ${drifted[*]};" \
    "re-run with ES_FIX_TOPIC_CONFIGS=true to update them"
fi
# Creation is asynchronous (the Admin API answers 202): wait until every new topic is there.
for topic in ${created[@]+"${created[@]}"}; do
  waited=0
  until quietly es topic "$topic" --json; do
    ((waited < ES_TOPIC_WAIT)) || die "topic $topic was created but did not appear within ${ES_TOPIC_WAIT}s"
    sleep 2
    waited=$((waited + 2))
  done
done

step "Event Streams access: one service ID per service, with only its own roles"
instance_crn=$(ibmcloud resource service-instance "$ES_INSTANCE" --id | grep -o 'crn:[^ ]*' | head -n 1) ||
  die "cannot read the CRN of Event Streams instance $ES_INSTANCE"
instance_guid=$(cut -d: -f8 <<<"$instance_crn")
[[ -n $instance_guid ]] || die "no instance ID in the CRN '$instance_crn' of $ES_INSTANCE"
brokers=${ES_BROKERS:-}
if [[ -z $brokers ]]; then
  # `es cluster --json` lists the brokers as {"id": .., "host": "..", "port": .., ...}.
  brokers=$(ibmcloud es cluster --json | json brokers) || true
  [[ -n $brokers ]] || die "cannot read the brokers of $ES_INSTANCE from 'ibmcloud es cluster --json': set ES_BROKERS"
fi
echo "    instance $instance_guid, brokers $brokers"

es_grant() { # service-id type resource role: one IAM policy on the Event Streams instance
  local args=(--service-instance "$instance_guid" --resource-type "$2")
  [[ $3 == - ]] || args+=(--resource "$3")
  grant "$1" "$4" messagehub "${args[@]}"
}

kafka_secret() { # service: <service>-kafka from a new API key of its service ID
  local service=$1 sid=$2 key_file="$scratch/$1-api-key.json" api_key verb=create
  new_api_key "$sid" kafka "$key_file"
  api_key=$(json apikey <"$key_file" 2>/dev/null) || api_key=""
  [[ -n $api_key ]] || die "no API key in the answer of iam service-api-key-create for $sid"
  quietly ce secret get --name "$service-kafka" && verb=update
  run ce secret "$verb" --name "$service-kafka" --from-env-file "$(secret_file "$service-kafka" \
    "EVENT_STREAMS_KAFKA_BROKERS_SASL=$brokers" EVENT_STREAMS_USER=token "EVENT_STREAMS_PASSWORD=$api_key")"
}

for service in "${services[@]}"; do
  sid="$CE_PROJECT-$service"
  ensure_service_id "$sid" "$service on Code Engine project $CE_PROJECT (deploy.sh)"
  while read -r type resource role; do
    [[ -n $type ]] && es_grant "$sid" "$type" "$resource" "$role"
  done <<<"${access_of[$service]}"
  if [[ $ES_ROTATE_KEYS != true ]] && quietly ce secret get --name "$service-kafka"; then
    echo "    secret $service-kafka exists (ES_ROTATE_KEYS=true for a new key)"
  else
    kafka_secret "$service" "$sid"
  fi
done

ensure_secret() { # secret-name KEY=VARIABLE... : create/update it when every variable is set, else require it
  local name=$1 mapping pairs=() unset_vars=()
  shift
  for mapping in "$@"; do
    local key=${mapping%%=*} var=${mapping#*=}
    if [[ -n ${!var:-} ]]; then pairs+=("$key=${!var}"); else unset_vars+=("$var"); fi
  done
  if ((${#unset_vars[@]} == 0)); then
    local verb=create
    quietly ce secret get --name "$name" && verb=update
    run ce secret "$verb" --name "$name" --from-env-file "$(secret_file "$name" "${pairs[@]}")"
  elif quietly ce secret get --name "$name"; then
    echo "    secret $name exists (set ${unset_vars[*]} to replace it)"
  else
    die "secret '$name' does not exist: set ${unset_vars[*]} (or create it: ibmcloud ce secret create --name $name --from-literal ...)"
  fi
}

step "secrets"
for service in "${services[@]}"; do
  [[ ${database_of[$service]} == postgres && -z $POSTGRES_INSTANCE ]] || continue
  var=DATABASE_URL_${service//-/_}
  mappings=("DATABASE_URL=${var^^}")
  [[ -z ${DATABASE_CA_CERT_BASE64:-} ]] || mappings+=(DATABASE_CA_CERT_BASE64=DATABASE_CA_CERT_BASE64)
  ensure_secret "$service-db" "${mappings[@]}"
done
if [[ " ${services[*]} " == *" notification-service "* ]]; then
  ensure_secret notification-smtp SMTP_URL=SMTP_URL MAIL_FROM=MAIL_FROM
fi
# API keys: the applications are public, so every one needs them (a service without keys would
# refuse to start on 0.0.0.0). Given (API_KEYS, CONSOLE_API_KEY), kept (the secrets exist), or made
# here once: a key with every scope, shown once and stored only as its SHA-256 digest, and the
# console's read key.
if [[ -z ${API_KEYS:-} ]] && ! quietly ce secret get --name api-keys; then
  [[ -z ${CI:-} ]] ||
    die "secret 'api-keys' does not exist: set API_KEYS and CONSOLE_API_KEY (a CI log is no place to show a new key; or run deploy.sh once from a terminal, which makes them)"
  generated=$(python3 -c '
import hashlib, secrets
def key():
    k = secrets.token_urlsafe(32)
    return k, hashlib.sha256(k.encode()).hexdigest()
ops, ops_digest = key()
console, console_digest = key()
every = "customers:read+customers:write+transactions:read+transactions:write+notifications:read+console:read"
reads = "customers:read+transactions:read+notifications:read"
print(f"ops:{every}:sha256:{ops_digest},console:{reads}:sha256:{console_digest}")
print(console)
print(ops)
')
  { read -r API_KEYS && read -r CONSOLE_API_KEY && read -r ops_key; } <<<"$generated"
  export API_KEYS CONSOLE_API_KEY
  printf '    generated API keys; the key "ops" (every scope) is shown this once, and stored only as its digest:
'
  printf '      ops: %s
' "$ops_key"
  printf '    keep it in a password manager. Scopes and rotation: SECURITY.md
'
  unset ops_key generated
fi
# The console's key must be one of API_KEYS (by value or SHA-256 digest) with the three read
# scopes and nothing more: a missing key would leave the console blind (401), a wider one would
# put write access where only reads are needed.
if [[ -n ${API_KEYS:-} && -n ${CONSOLE_API_KEY:-} ]]; then
  scope_problem=$(python3 -c '
import hashlib, os
key = os.environ["CONSOLE_API_KEY"].strip()
digest = hashlib.sha256(key.encode()).hexdigest()
reads = {"customers:read", "transactions:read", "notifications:read"}
for entry in os.environ["API_KEYS"].split(","):
    parts = entry.strip().split(":")
    if len(parts) >= 5 and parts[-2] == "sha256":
        match, scopes = parts[-1].lower() == digest, parts[1:-2]
    elif len(parts) >= 4:
        match, scopes = parts[-1] == key, parts[1:-1]
    else:
        continue
    if match:
        scopes = set(":".join(scopes).split("+"))
        if scopes != reads:
            print("has the scopes " + "+".join(sorted(scopes)) + ", not exactly " + "+".join(sorted(reads)))
        break
else:
    print("is not one of API_KEYS (by value or sha256 digest)")
') || die "cannot check CONSOLE_API_KEY against API_KEYS"
  [[ -z $scope_problem ]] || die "CONSOLE_API_KEY $scope_problem"
fi
ensure_secret api-keys API_KEYS=API_KEYS
if [[ " ${services[*]} " == *" console "* ]]; then
  ensure_secret console-api-key CONSOLE_API_KEY=CONSOLE_API_KEY
fi

# ------------------------------------------------------------------------------ applications
rollout_end=$((SECONDS + CE_ROLLOUT_BUDGET))

not_ready() { # service reason: the application's status and last log lines, then stop
  local service=$1
  printf 'deploy.sh: FAILED: application %s did not become ready: %s\n' "$service" "$2" >&2
  printf '%s\n' "---- its status: ibmcloud ce application get --name $service" >&2
  ibmcloud ce application get --name "$service" >&2 || true
  printf '%s\n' "---- its last log lines: ibmcloud ce application logs --application $service --tail $CE_LOG_LINES" >&2
  ibmcloud ce application logs --application "$service" --tail "$CE_LOG_LINES" >&2 || true
  exit 1
}

# waiting SERVICE ARGS...: an ibmcloud command that waits for SERVICE to be ready (--wait
# --wait-timeout), for CE_APP_WAIT seconds or what is left of the rollout budget, whichever is less.
waiting() {
  local service=$1 left=$((rollout_end - SECONDS)) rc=0
  shift
  local wait=$((left < CE_APP_WAIT ? left : CE_APP_WAIT))
  ((wait >= 30)) || not_ready "$service" "the rollout budget CE_ROLLOUT_BUDGET=${CE_ROLLOUT_BUDGET}s is spent"
  printf '    $ ibmcloud %s --wait --wait-timeout %s\n' "$*" "$wait"
  ibmcloud "$@" --wait --wait-timeout "$wait" || rc=$?
  ((rc == 0)) || not_ready "$service" "[ibmcloud $1 $2 $3 --name $service] exited with $rc within ${wait}s"
}

for service in "${services[@]}"; do
  port=${port_of[$service]}
  image="$ICR_REGISTRY/$ICR_NAMESPACE/$service:$IMAGE_TAG"
  step "application $service ($image, visibility ${visibility_of[$service]})"
  args=(--image "$image" --registry-secret "$CE_REGISTRY_SECRET" --port "$port"
    --visibility "${visibility_of[$service]}"
    --min-scale "$CE_MIN_SCALE" --max-scale "$CE_MAX_SCALE" --cpu "$CE_CPU" --memory "$CE_MEMORY"
    --env KAFKA_TOPIC_PARTITIONS="$KAFKA_TOPIC_PARTITIONS" --env KAFKA_TOPIC_REPLICATION_FACTOR=3
    --env KAFKA_CREATE_TOPICS=false --env-from-secret "$service-kafka"
    --env LOG_FORMAT=json --env RUST_LOG=info
    --env RATE_LIMIT_PER_SECOND="$RATE_LIMIT_PER_SECOND" --env RATE_LIMIT_BURST="$RATE_LIMIT_BURST"
    --env TRUSTED_PROXIES="$TRUSTED_PROXIES"
    --probe-live type=http --probe-live path=/healthz --probe-live port="$port"
    --probe-live initial-delay="$CE_LIVENESS_DELAY" --probe-live interval=10
    --probe-live timeout=2 --probe-live failure-threshold=3
    --probe-ready type=http --probe-ready path=/readyz --probe-ready port="$port"
    --probe-ready interval=5 --probe-ready timeout=2 --probe-ready failure-threshold=3)
  bind_database=false
  if [[ ${database_of[$service]} == postgres ]]; then
    if [[ -n $POSTGRES_INSTANCE ]]; then
      bind_database=true
      database_name=${service//-/_}
      args+=(--env "DATABASE_NAME=$database_name")
    else
      args+=(--env-from-secret "$service-db")
    fi
  fi
  [[ $service == notification-service ]] && args+=(--env-from-secret notification-smtp)
  if [[ $service == console ]]; then
    for upstream in customer-service transaction-service notification-service; do
      var=${upstream//-/_}_URL
      output=url
      [[ ${visibility_of[$upstream]} == public ]] || output=project-url
      url=$(ibmcloud ce application get --name "$upstream" --output "$output") ||
        die "the console reads $upstream, which is not deployed: deploy it first (SERVICES)"
      [[ $url == http://* || $url == https://* ]] ||
        die "the console reads $upstream, whose URL ('ce application get --output $output') is empty or not a URL: '$url'"
      args+=(--env "${var^^}=$url")
    done
  fi
  args+=(--env-from-secret api-keys)
  [[ $service == console ]] && args+=(--env-from-secret console-api-key)

  app_json=""
  if app_json=$(ibmcloud ce application get --name "$service" --output json 2>/dev/null); then
    # An Event Streams binding (prefix EVENT_STREAMS, made by an earlier version of this script)
    # carries a Manager credential under the variable names of <service>-kafka: remove it before
    # the update. Event Streams is never bound here: each bind would mint yet another credential.
    old_bindings=$(json bindings EVENT_STREAMS <<<"$app_json") ||
      die "cannot read the answer of 'ibmcloud ce application get --name $service --output json'"
    if grep -qx -- - <<<"$old_bindings"; then
      run ce application unbind --name "$service" --all # the previous implementation: all or none
    else
      while read -r binding; do
        [[ -z $binding ]] || run ce application unbind --name "$service" --binding "$binding"
      done <<<"$old_bindings"
    fi
  elif $bind_database; then
    # A new application that reads its database from a binding cannot become ready before it is
    # bound, and only an existing application can be bound: it starts as IBM's sample image
    # (ready at once, project visibility, scale to zero), is bound, then becomes the service.
    waiting "$service" ce application create --name "$service" --image icr.io/codeengine/helloworld \
      --visibility project --min-scale 0 --max-scale 1
    app_json='{}'
  fi
  if $bind_database && grep -q "\"$service-db\"" <<<"$app_json"; then
    # Moving from the <service>-db secret to the binding: its DATABASE_URL would win over the binding.
    args+=(--env-from-secret-rm "$service-db")
  fi
  if $bind_database; then
    # Bound once: the binding's credential (a database user of its own) stays across updates.
    bound=$(json bindings DATABASE <<<"$app_json") ||
      die "cannot read the answer of 'ibmcloud ce application get --name $service --output json'"
    if [[ -n $bound ]]; then
      echo "    $POSTGRES_INSTANCE is bound (prefix DATABASE)"
    else
      waiting "$service" ce application bind --name "$service" --service-instance "$POSTGRES_INSTANCE" --prefix DATABASE
    fi
  fi
  if [[ -n $app_json ]]; then
    waiting "$service" ce application update --name "$service" "${args[@]}"
  else
    waiting "$service" ce application create --name "$service" "${args[@]}"
  fi
done

step "done"
for service in "${services[@]}"; do
  output=url
  [[ ${visibility_of[$service]} == public ]] || output=project-url
  printf '    %-22s %-8s %s\n' "$service" "${visibility_of[$service]}" \
    "$(ibmcloud ce application get --name "$service" --output "$output")"
done
