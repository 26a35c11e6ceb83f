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
#   IBMCLOUD_API_KEY         log in with it (else an existing `ibmcloud login` session is used); also
#                            needed once to create the registry pull secret
#   ICR_REGISTRY (icr.io)  CE_REGISTRY_SECRET (icr-pull)  KAFKA_TOPIC_PARTITIONS (1)
#   CE_MIN_SCALE (1)  CE_MAX_SCALE (2)  CE_CPU (0.5)  CE_MEMORY (1G)
#   ES_BROKERS               the instance's SASL brokers, comma-separated (default: `es cluster --json`)
#   ES_ROTATE_KEYS (false)   true: give every service a new Event Streams API key (old keys stay valid
#                            until deleted: ibmcloud iam service-api-keys <CE_PROJECT>-<service>)
#   SERVICES                 subset to deploy, space-separated (default: all of deploy/services.txt)
# Secrets (Code Engine secrets, passed to the applications with --env-from-secret). When the variable
# is set the secret is created or updated from it; when it is not, the secret must already exist:
#   <service>-db       DATABASE_URL   from DATABASE_URL_CUSTOMER_SERVICE, DATABASE_URL_TRANSACTION_SERVICE,
#                                     DATABASE_URL_NOTIFICATION_SERVICE (services with a database in
#                                     deploy/services.txt; the console has none)
#   notification-smtp  SMTP_URL, MAIL_FROM (notification-service only)
#   api-keys           API_KEYS (optional: attached to every service when it exists)
#   <service>-kafka    EVENT_STREAMS_KAFKA_BROKERS_SASL, EVENT_STREAMS_USER, EVENT_STREAMS_PASSWORD: made
#                      by this script from the service's own service ID <CE_PROJECT>-<service>, whose
#                      IAM policies are event-streams-access.txt (least privilege; no Manager)
# The console reads the other services' APIs at their application URLs (CUSTOMER_SERVICE_URL, ...),
# looked up when it is deployed, so those applications must exist by then (they come first).
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

ICR_REGISTRY=${ICR_REGISTRY:-icr.io}
CE_REGISTRY_SECRET=${CE_REGISTRY_SECRET:-icr-pull}
KAFKA_TOPIC_PARTITIONS=${KAFKA_TOPIC_PARTITIONS:-1}
CE_MIN_SCALE=${CE_MIN_SCALE:-1}
CE_MAX_SCALE=${CE_MAX_SCALE:-2}
CE_CPU=${CE_CPU:-0.5}
CE_MEMORY=${CE_MEMORY:-1G}
ES_ROTATE_KEYS=${ES_ROTATE_KEYS:-false}
for var in KAFKA_TOPIC_PARTITIONS CE_MIN_SCALE CE_MAX_SCALE; do
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
declare -A access_of=()
while read -r name type resource role; do
  [[ -z $name || $name == \#* ]] && continue
  access_of[$name]+="$type $resource $role"$'\n'
done <"$here/event-streams-access.txt"
for service in "${services[@]}"; do
  [[ -n ${access_of[$service]:-} ]] || die "no Event Streams access for '$service' in $here/event-streams-access.txt"
done
topics=()
while read -r topic; do
  [[ -z $topic || $topic == \#* ]] && continue
  topics+=("$topic" "$topic.DLT")
done <"$deploy_dir/topics.txt"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
secret_file() { # name line... -> a 0600 file of the lines, no final newline (values never reach argv or the log)
  local file="$scratch/$1"
  shift
  (umask 077 && IFS=$'\n' && printf '%s' "$*" >"$file")
  printf '%s' "$file"
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
for plugin in code-engine event-streams; do
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

step "registry access $CE_REGISTRY_SECRET for $ICR_REGISTRY"
if quietly ce registry get --name "$CE_REGISTRY_SECRET"; then
  echo "    exists"
else
  [[ -n ${IBMCLOUD_API_KEY:-} ]] ||
    die "registry secret '$CE_REGISTRY_SECRET' does not exist; set IBMCLOUD_API_KEY once to create it"
  run ce registry create --name "$CE_REGISTRY_SECRET" --server "$ICR_REGISTRY" --username iamapikey \
    --password-from-file "$(secret_file registry-password "$IBMCLOUD_API_KEY")"
fi

step "Event Streams topics on $ES_INSTANCE (${#topics[@]} topics, $KAFKA_TOPIC_PARTITIONS partition(s) each)"
run es init --instance-name "$ES_INSTANCE"
for topic in "${topics[@]}"; do
  printf '    $ ibmcloud es topic-create --name %s --partitions %s\n' "$topic" "$KAFKA_TOPIC_PARTITIONS"
  if ! out=$(ibmcloud es topic-create --name "$topic" --partitions "$KAFKA_TOPIC_PARTITIONS" 2>&1); then
    if grep -qi 'already exists' <<<"$out"; then
      echo "    $topic already exists"
    else
      printf '%s\n' "$out" >&2
      die "could not create topic $topic"
    fi
  fi
done

step "Event Streams access: one service ID per service, with only its own roles"
instance_crn=$(ibmcloud resource service-instance "$ES_INSTANCE" --id | grep -o 'crn:[^ ]*' | head -n 1) ||
  die "cannot read the CRN of Event Streams instance $ES_INSTANCE"
instance_guid=$(cut -d: -f8 <<<"$instance_crn")
[[ -n $instance_guid ]] || die "no instance ID in the CRN '$instance_crn' of $ES_INSTANCE"
brokers=${ES_BROKERS:-}
if [[ -z $brokers ]]; then
  # `es cluster --json` lists the brokers as {"id": .., "host": "..", "port": .., ...}.
  brokers=$(ibmcloud es cluster --json | tr -d ' \n\t' | grep -o '"host":"[^"]*","port":[0-9]*' |
    sed 's/"host":"\([^"]*\)","port":\([0-9]*\)/\1:\2/' | paste -sd, -) || true
  [[ -n $brokers ]] || die "cannot read the brokers of $ES_INSTANCE from 'ibmcloud es cluster --json': set ES_BROKERS"
fi
echo "    instance $instance_guid, brokers $brokers"

grant() { # service-id type resource role: one IAM policy on the instance; an existing one is fine
  local sid=$1 type=$2 resource=$3 role=$4 args out
  args=(iam service-policy-create "$sid" --roles "$role" --service-name messagehub
    --service-instance "$instance_guid" --resource-type "$type")
  [[ $resource == - ]] || args+=(--resource "$resource")
  printf '    $ ibmcloud %s\n' "${args[*]}"
  if ! out=$(ibmcloud "${args[@]}" 2>&1); then
    grep -qi 'already exists' <<<"$out" || { printf '%s\n' "$out" >&2; die "could not grant $role on $type $resource to $sid"; }
    echo "    already granted"
  fi
}

kafka_secret() { # service: <service>-kafka from a new API key of its service ID
  local service=$1 sid=$2 key_file="$scratch/$1-api-key.json" api_key verb=create
  (umask 077 && : >"$key_file")
  run iam service-api-key-create "$sid-kafka-$(date -u +%Y%m%d%H%M%S)" "$sid" \
    --description "Event Streams credential of $service (deploy.sh)" --file "$key_file"
  api_key=$(tr -d ' \n' <"$key_file" | grep -o '"apikey":"[^"]*"' | cut -d'"' -f4) ||
    die "no API key in the answer of iam service-api-key-create for $sid"
  quietly ce secret get --name "$service-kafka" && verb=update
  run ce secret "$verb" --name "$service-kafka" --from-env-file "$(secret_file "$service-kafka" \
    "EVENT_STREAMS_KAFKA_BROKERS_SASL=$brokers" EVENT_STREAMS_USER=token "EVENT_STREAMS_PASSWORD=$api_key")"
}

for service in "${services[@]}"; do
  sid="$CE_PROJECT-$service"
  if quietly iam service-id "$sid"; then
    echo "    service ID $sid exists"
  else
    run iam service-id-create "$sid" --description "$service on Code Engine project $CE_PROJECT (deploy.sh)"
  fi
  while read -r type resource role; do
    [[ -n $type ]] && grant "$sid" "$type" "$resource" "$role"
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
  [[ ${database_of[$service]} == postgres ]] || continue
  var=DATABASE_URL_${service//-/_}
  ensure_secret "$service-db" "DATABASE_URL=${var^^}"
done
if [[ " ${services[*]} " == *" notification-service "* ]]; then
  ensure_secret notification-smtp SMTP_URL=SMTP_URL MAIL_FROM=MAIL_FROM
fi
api_keys_secret=""
if [[ -n ${API_KEYS:-} ]]; then
  ensure_secret api-keys API_KEYS=API_KEYS
  api_keys_secret=api-keys
elif quietly ce secret get --name api-keys; then
  api_keys_secret=api-keys
else
  echo "    WARNING: no API_KEYS and no api-keys secret: write endpoints will be open to anyone"
fi

for service in "${services[@]}"; do
  port=${port_of[$service]}
  image="$ICR_REGISTRY/$ICR_NAMESPACE/$service:$IMAGE_TAG"
  step "application $service ($image)"
  args=(--image "$image" --registry-secret "$CE_REGISTRY_SECRET" --port "$port"
    --min-scale "$CE_MIN_SCALE" --max-scale "$CE_MAX_SCALE" --cpu "$CE_CPU" --memory "$CE_MEMORY"
    --env KAFKA_TOPIC_PARTITIONS="$KAFKA_TOPIC_PARTITIONS" --env KAFKA_TOPIC_REPLICATION_FACTOR=3
    --env KAFKA_CREATE_TOPICS=false --env-from-secret "$service-kafka"
    --env LOG_FORMAT=json --env RUST_LOG=info
    --probe-live type=http --probe-live path=/healthz --probe-live port="$port"
    --probe-ready type=http --probe-ready path=/readyz --probe-ready port="$port")
  [[ ${database_of[$service]} == postgres ]] && args+=(--env-from-secret "$service-db")
  [[ $service == notification-service ]] && args+=(--env-from-secret notification-smtp)
  if [[ $service == console ]]; then
    for upstream in customer-service transaction-service notification-service; do
      var=${upstream//-/_}_URL
      url=$(ibmcloud ce application get --name "$upstream" --output url) ||
        die "the console reads $upstream, which is not deployed: deploy it first (SERVICES)"
      args+=(--env "${var^^}=$url")
    done
  fi
  [[ -n $api_keys_secret ]] && args+=(--env-from-secret "$api_keys_secret")

  if quietly ce application get --name "$service"; then
    run ce application update --name "$service" "${args[@]}"
  else
    # No waiting: the revision becomes ready in the background (probes: /healthz, /readyz).
    run ce application create --name "$service" "${args[@]}" --no-wait
  fi

  # A binding from an earlier version of this script carries an instance-wide Manager credential
  # under the same variable names: remove it, the service has its own credential now.
  if ibmcloud ce application get --name "$service" |
    awk -v instance="$ES_INSTANCE" '
      /^Service Bindings:/ { table = 1; next }
      table && NF == 0 { table = 0 }
      table && $1 == instance { for (i = 2; i <= NF; i++) if ($i == "EVENT_STREAMS") found = 1 }
      END { exit !found }'; then
    run ce application unbind --name "$service" --all
  fi
done

step "done"
for service in "${services[@]}"; do
  printf '    %-22s %s\n' "$service" "$(ibmcloud ce application get --name "$service" --output url)"
done
