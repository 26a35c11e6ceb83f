#!/usr/bin/env bash
# Tests deploy/codeengine/deploy.sh against the stand-in CLI in fake-ibmcloud/ (first on PATH), which
# answers with the output shapes IBM documents (see its header): the recorded sequence of ibmcloud
# calls for a first deployment and for a re-run (old Event Streams bindings found in the JSON of
# `ce application get --output json` and removed, nothing bound), least privilege, the registry pull
# secret from a Reader service ID, topics created by the script (existence by `es topic`), a missing
# variable, a missing secret, and a failing step. Prints PASS/FAIL per case; exits 1 on any failure.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
deploy_sh="$here/../codeengine/deploy.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

pass() { echo "  PASS codeengine: $1"; }
fail() {
  echo "  FAIL codeengine: $1"
  shift
  printf '       %s\n' "$@"
  failures=$((failures + 1))
}

# A fresh world: the code-engine plug-in installed, nothing else.
fresh_state() {
  rm -rf "$work/state" "$work/log"
  mkdir -p "$work/state/plugin"
  : >"$work/state/plugin/code-engine"
  : >"$work/log"
}

# deploy <env assignments...>: runs deploy.sh with the base variables plus the given ones.
deploy() {
  env -i HOME="$HOME" PATH="$here/fake-ibmcloud:$PATH" \
    FAKE_IBMCLOUD_STATE="$work/state" FAKE_IBMCLOUD_LOG="$work/log" FAKE_IBMCLOUD_FAIL="${FAKE_IBMCLOUD_FAIL:-}" \
    FAKE_IBMCLOUD_NOT_READY="${FAKE_IBMCLOUD_NOT_READY:-}" \
    IBMCLOUD_REGION=us-south IBMCLOUD_RESOURCE_GROUP=Default ICR_NAMESPACE=ems CE_PROJECT=ems-prod \
    ES_INSTANCE=ems-events IMAGE_TAG=v1 "$@" \
    bash "$deploy_sh" >"$work/out" 2>&1
}

# expect_sequence NAME <<< "prefix lines": each recorded call must start with the expected line, in order.
expect_sequence() {
  local name=$1 expected actual i
  mapfile -t expected
  mapfile -t actual <"$work/log"
  if ((${#expected[@]} != ${#actual[@]})); then
    fail "$name" "expected ${#expected[@]} calls, recorded ${#actual[@]}:" "${actual[@]}"
    return 1
  fi
  for i in "${!expected[@]}"; do
    if [[ ${actual[i]} != "${expected[i]}"* ]]; then
      fail "$name" "call $((i + 1)): expected '${expected[i]}...'" "got '${actual[i]}'"
      return 1
    fi
  done
  pass "$name"
}

# expect_call NAME PREFIX FRAGMENT...: the call starting with PREFIX carries every fragment.
expect_call() {
  local name=$1 prefix=$2 line fragment
  shift 2
  line=$(grep -F -- "$prefix" "$work/log" | head -n 1)
  for fragment in "$@"; do
    if [[ " $line " != *" $fragment "* ]]; then
      fail "$name" "'$prefix' lacks '$fragment'" "call: ${line:-<none>}"
      return 1
    fi
  done
  pass "$name"
}

all_topics=(Customer.created Customer.created.DLT transaction.requested transaction.requested.DLT
  transaction.processed transaction.processed.DLT transaction.failed transaction.failed.DLT)
# topic_calls first|again: each topic looked up (`es topic`); on a first run created with 3
# partitions, then awaited.
topic_calls() {
  local topic
  for topic in "${all_topics[@]}"; do
    echo "es topic $topic --json"
    [[ $1 == first ]] && echo "es topic-create --name $topic --partitions 3"
  done
  if [[ $1 == first ]]; then
    for topic in "${all_topics[@]}"; do echo "es topic $topic --json"; done
  fi
}

registry_calls_first="ce registry get --name icr-pull
iam service-id ems-prod-registry-pull
iam service-id-create ems-prod-registry-pull --description
iam service-policy-create ems-prod-registry-pull --roles Reader --service-name container-registry --attributes geography=global --resource-type namespace --resource ems
iam service-api-key-create ems-prod-registry-pull-registry-
ce registry create --name icr-pull --server icr.io --username iamapikey --password-from-json-file <apikey-file:ems-prod-registry-pull>"

# The IAM policy calls of a service's service ID, from deploy/codeengine/event-streams-access.txt.
policy_calls() {
  local name type resource role line
  while read -r name type resource role; do
    [[ $name == "$1" ]] || continue
    line="iam service-policy-create ems-prod-$1 --roles $role --service-name messagehub"
    line+=" --service-instance fake-es-guid --resource-type $type"
    [[ $resource == - ]] || line+=" --resource $resource"
    echo "$line"
  done <"$here/../codeengine/event-streams-access.txt"
}

# access_calls first|again SERVICE...: the Event Streams access step of a first run or a re-run.
access_calls() {
  local run=$1 service
  shift
  echo "resource service-instance ems-events --id"
  echo "es cluster --json"
  for service in "$@"; do
    echo "iam service-id ems-prod-$service"
    [[ $run == first ]] && echo "iam service-id-create ems-prod-$service --description"
    policy_calls "$service"
    echo "ce secret get --name $service-kafka"
    if [[ $run == first ]]; then
      echo "iam service-api-key-create ems-prod-$service-kafka-"
      echo "ce secret get --name $service-kafka"
      echo "ce secret create --name $service-kafka --from-env-file <file:EVENT_STREAMS_KAFKA_BROKERS_SASL,EVENT_STREAMS_USER,EVENT_STREAMS_PASSWORD>"
    fi
  done
}
all_services=(customer-service transaction-service notification-service console)

secrets=(IBMCLOUD_API_KEY=key-SECRET-1 DATABASE_URL_CUSTOMER_SERVICE=postgres://c:pw-SECRET-2@db/c
  DATABASE_URL_TRANSACTION_SERVICE=postgres://t:pw-SECRET-3@db/t
  DATABASE_URL_NOTIFICATION_SERVICE=postgres://n:pw-SECRET-4@db/n SMTP_URL=smtp://u:pw-SECRET-5@mail:587
  MAIL_FROM=bank@example.com
  "API_KEYS=ops:customers:read+customers:write+console:read:key-SECRET-6-0123456789abcdef,console:customers:read+transactions:read+notifications:read:key-SECRET-8-0123456789abcdef"
  CONSOLE_API_KEY=key-SECRET-8-0123456789abcdef)
no_keys=()
for assignment in "${secrets[@]}"; do
  [[ $assignment == API_KEYS=* || $assignment == CONSOLE_API_KEY=* ]] || no_keys+=("$assignment")
done

# --- (a) first deployment ---------------------------------------------------------------------
fresh_state
if deploy "${secrets[@]}"; then
  pass "first deployment exits 0"
else
  fail "first deployment exits 0" "$(tail -n 5 "$work/out")"
fi
expect_sequence "first deployment: call sequence" <<EOF
login -r us-south -g Default
plugin show code-engine
plugin show event-streams
plugin install event-streams -f
plugin show container-registry
plugin install container-registry -f
ce project get --name ems-prod
ce project create --name ems-prod
ce project select --name ems-prod
$registry_calls_first
cr region-set global
cr retention-policy-set --images 3 --force ems
es init --instance-name ems-events
$(topic_calls first)
$(access_calls first "${all_services[@]}")
ce secret get --name customer-service-db
ce secret create --name customer-service-db --from-env-file <file:DATABASE_URL>
ce secret get --name transaction-service-db
ce secret create --name transaction-service-db --from-env-file <file:DATABASE_URL>
ce secret get --name notification-service-db
ce secret create --name notification-service-db --from-env-file <file:DATABASE_URL>
ce secret get --name notification-smtp
ce secret create --name notification-smtp --from-env-file <file:SMTP_URL,MAIL_FROM>
ce secret get --name api-keys
ce secret create --name api-keys --from-env-file <file:API_KEYS>
ce secret get --name console-api-key
ce secret create --name console-api-key --from-env-file <file:CONSOLE_API_KEY>
ce application get --name customer-service --output json
ce application create --name customer-service --image icr.io/ems/customer-service:v1
ce application get --name transaction-service --output json
ce application create --name transaction-service --image icr.io/ems/transaction-service:v1
ce application get --name notification-service --output json
ce application create --name notification-service --image icr.io/ems/notification-service:v1
ce application get --name customer-service --output url
ce application get --name transaction-service --output url
ce application get --name notification-service --output project-url
ce application get --name console --output json
ce application create --name console --image icr.io/ems/console:v1
ce application get --name customer-service --output url
ce application get --name transaction-service --output url
ce application get --name notification-service --output project-url
ce application get --name console --output url
EOF
expect_call "first deployment: customer-service settings" "ce application create --name customer-service" \
  "--registry-secret icr-pull" "--port 3001" "--min-scale 1" "--max-scale 2" \
  "--env-from-secret customer-service-db" "--env-from-secret api-keys" \
  "--env KAFKA_TOPIC_REPLICATION_FACTOR=3" "--env KAFKA_TOPIC_PARTITIONS=3" \
  "--env KAFKA_CREATE_TOPICS=false" "--env-from-secret customer-service-kafka" \
  "--probe-live type=http" "--probe-live path=/healthz" "--probe-live port=3001" \
  "--probe-live initial-delay=30" "--probe-live failure-threshold=3" \
  "--probe-ready type=http" "--probe-ready path=/readyz" "--probe-ready port=3001" \
  "--visibility public" "--wait" "--wait-timeout 240" \
  "--env RATE_LIMIT_PER_SECOND=50" "--env RATE_LIMIT_BURST=100" \
  "--env TRUSTED_PROXIES=127.0.0.1,::1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"
expect_call "first deployment: notification-service gets SMTP, project visibility" "ce application create --name notification-service" \
  "--port 3003" "--env-from-secret notification-service-db" "--env-from-secret notification-smtp" "--visibility project"
expect_call "first deployment: the console reads the services' URLs, no database" \
  "ce application create --name console" "--port 3004" "--probe-live path=/healthz" "--probe-live port=3004" \
  "--probe-live initial-delay=30" \
  "--probe-ready path=/readyz" "--probe-ready port=3004" "--env-from-secret api-keys" \
  "--env-from-secret console-api-key" \
  "--env-from-secret console-kafka" "--env KAFKA_CREATE_TOPICS=false" \
  "--env KAFKA_TOPIC_REPLICATION_FACTOR=3" \
  "--env CUSTOMER_SERVICE_URL=https://customer-service.fake.us-south.codeengine.appdomain.cloud" \
  "--env TRANSACTION_SERVICE_URL=https://transaction-service.fake.us-south.codeengine.appdomain.cloud" \
  "--env NOTIFICATION_SERVICE_URL=http://notification-service.fake1234.svc.cluster.local" "--visibility public"
if grep -q -e 'console-db' -e 'DATABASE_URL_CONSOLE' "$work/log" "$work/out"; then
  fail "the console needs no database secret" "$(grep -h -e console-db -e DATABASE_URL_CONSOLE "$work/log" "$work/out" | head -n 3)"
else
  pass "the console needs no database secret"
fi
if [[ $(cat "$work/state/secret-values/console-api-key") == CONSOLE_API_KEY=key-SECRET-8-0123456789abcdef ]] &&
  grep -q '^ce application create --name console .*--env-from-secret console-api-key' "$work/log" &&
  ! grep '^ce application create --name [a-z-]*service ' "$work/log" | grep -q console-api-key; then
  pass "first deployment: CONSOLE_API_KEY in the secret console-api-key, given to the console only"
else
  fail "first deployment: CONSOLE_API_KEY in the secret console-api-key, given to the console only" "$(grep console-api-key "$work/log")"
fi
if grep -q SECRET "$work/log" "$work/out"; then
  fail "no secret value in CLI arguments or output" "$(grep -h SECRET "$work/log" "$work/out" | head -n 3)"
else
  pass "no secret value in CLI arguments or output"
fi
if grep -q '^==> application customer-service' "$work/out" && grep -q 'customer-service.fake.us-south' "$work/out"; then
  pass "first deployment prints its steps and the URLs"
else
  fail "first deployment prints its steps and the URLs" "$(head -n 5 "$work/out")"
fi

# Least privilege: each service ID gets only what its service uses, nobody gets Manager.
grants() { grep "^iam service-policy-create ems-prod-$1 " "$work/log"; }
least_privilege() {
  grep -q '^iam service-policy-create .*--roles Manager' "$work/log" && { echo "a service was granted Manager"; return 1; }
  if [[ $(grep -c '^iam service-policy-create ems-prod-registry-pull ' "$work/log") != 1 ]] ||
    ! grep -q '^iam service-policy-create ems-prod-registry-pull --roles Reader --service-name container-registry .*--resource-type namespace --resource ems$' "$work/log"; then
    echo "the registry pull service ID has more than Reader on the namespace ems"
    return 1
  fi
  grep -q -- '--service-name container-registry' <(grep -v '^iam service-policy-create ems-prod-registry-pull ' "$work/log") &&
    { echo "another service ID has registry access"; return 1; }
  grants customer-service | grep -q -- '--roles Writer .*--resource-type topic --resource Customer.created$' ||
    { echo "customer-service cannot write Customer.created"; return 1; }
  grants customer-service | grep -q -e 'transaction\.' -e '--resource-type group' &&
    { echo "customer-service has access to transaction topics or groups"; return 1; }
  grants notification-service | grep -q -- '--roles Writer .*--resource-type topic --resource [A-Za-z.]*[a-z]$' &&
    { echo "notification-service may write a business topic"; return 1; }
  grants notification-service | grep -q -- '--roles Reader .*--resource-type group --resource notification-service.customers$' ||
    { echo "notification-service cannot use its consumer group"; return 1; }
  grants console | grep -qv -- '--roles Reader ' && { echo "the console may write"; return 1; }
  grants transaction-service | grep -- '--resource Customer.created$' | grep -q -- '--roles Writer' &&
    { echo "transaction-service may write Customer.created"; return 1; }
  for service in "${all_services[@]}"; do
    grants "$service" | grep -q -- '--resource-type cluster$' || { echo "$service cannot connect"; return 1; }
  done
}
if out=$(least_privilege); then
  pass "first deployment: one service ID per service, least privilege, no Manager; the registry: Reader"
else
  fail "first deployment: one service ID per service, least privilege, no Manager; the registry: Reader" "$out"
fi
if [[ $(grep -c '^ce application bind' "$work/log") == 0 && $(grep -c '^es topic-create .* --partitions 3 --config ' "$work/log") == 8 ]]; then
  pass "first deployment: nothing bound; 8 topics created by the script, 3 partitions each"
else
  fail "first deployment: nothing bound; 8 topics created by the script, 3 partitions each" "$(grep -e bind -e topic-create "$work/log")"
fi
# Each topic is created with the configs of deploy/topics.txt (generated from contracts), one
# --config per KEY=VALUE, and the figures are the documented ones.
topic_configs_passed() {
  local name pairs pair expected
  while read -r name pairs; do
    [[ -z $name || $name == \#* ]] && continue
    expected="es topic-create --name $name --partitions 3"
    for pair in $pairs; do expected+=" --config $pair"; done
    grep -qxF -- "$expected" "$work/log" || { echo "expected: $expected"; grep -F -- "--name $name " "$work/log"; return 1; }
  done <"$here/../topics.txt"
  grep -qxF 'es topic-create --name Customer.created --partitions 3 --config cleanup.policy=compact' "$work/log" &&
    grep -qxF 'es topic-create --name transaction.requested --partitions 3 --config cleanup.policy=delete --config retention.ms=604800000' "$work/log" &&
    grep -qxF 'es topic-create --name transaction.failed.DLT --partitions 3 --config cleanup.policy=delete --config retention.ms=2592000000' "$work/log"
}
if out=$(topic_configs_passed); then
  pass "first deployment: every topic created with its configs (compacted Customer.created, 7 days, .DLT 30 days)"
else
  fail "first deployment: every topic created with its configs (compacted Customer.created, 7 days, .DLT 30 days)" "$out"
fi

# --- (b) re-run on what (a) left: updates, no second bind, topics already there -----------------
# Earlier versions of deploy.sh bound Event Streams with a Manager credential (prefix EVENT_STREAMS):
# the re-run removes those, found in `ce application get --output json`: one of the previous
# implementation (no name: `unbind --all`), one of the current one (`unbind --binding NAME`). Another
# service's binding stays.
mkdir -p "$work/state/binding"
echo "- ems-events messagehub Manager EVENT_STREAMS" >"$work/state/binding/customer-service"
echo "transaction-service-es-binding ems-events messagehub Manager EVENT_STREAMS" >"$work/state/binding/transaction-service"
echo "notification-service-cos mycos cloud-object-storage Writer CLOUD_OBJECT_STORAGE" >"$work/state/binding/notification-service"
: >"$work/log"
if deploy IMAGE_TAG=v2; then
  pass "re-run exits 0"
else
  fail "re-run exits 0" "$(tail -n 5 "$work/out")"
fi
expect_sequence "re-run: call sequence (update, no create, no bind)" <<EOF
target -r us-south -g Default
plugin show code-engine
plugin show event-streams
plugin show container-registry
ce project get --name ems-prod
ce project select --name ems-prod
ce registry get --name icr-pull
cr region-set global
cr retention-policy-set --images 3 --force ems
es init --instance-name ems-events
$(topic_calls again)
$(access_calls again "${all_services[@]}")
ce secret get --name customer-service-db
ce secret get --name transaction-service-db
ce secret get --name notification-service-db
ce secret get --name notification-smtp
ce secret get --name api-keys
ce secret get --name api-keys
ce secret get --name console-api-key
ce application get --name customer-service --output json
ce application unbind --name customer-service --all
ce application update --name customer-service --image icr.io/ems/customer-service:v2
ce application get --name transaction-service --output json
ce application unbind --name transaction-service --binding transaction-service-es-binding
ce application update --name transaction-service --image icr.io/ems/transaction-service:v2
ce application get --name notification-service --output json
ce application update --name notification-service --image icr.io/ems/notification-service:v2
ce application get --name customer-service --output url
ce application get --name transaction-service --output url
ce application get --name notification-service --output project-url
ce application get --name console --output json
ce application update --name console --image icr.io/ems/console:v2
ce application get --name customer-service --output url
ce application get --name transaction-service --output url
ce application get --name notification-service --output project-url
ce application get --name console --output url
EOF
if [[ $(grep -cE '^    [A-Za-z.]+ exists$' "$work/out") == 8 ]] && ! grep -q '^es topic-create' "$work/log"; then
  pass "re-run: existing topics found by 'es topic', none created again"
else
  fail "re-run: existing topics found by 'es topic', none created again" "$(grep -E '^    [A-Za-z.]+ exists$' "$work/out")"
fi

granted=$(grep -c 'already granted' "$work/out")
policies=0
for service in "${all_services[@]}"; do policies=$((policies + $(policy_calls "$service" | wc -l))); done
if ((granted == policies)) && [[ ! -e $work/state/binding/customer-service && ! -e $work/state/binding/transaction-service ]] &&
  grep -q '^notification-service-cos ' "$work/state/binding/notification-service"; then
  pass "re-run: existing policies tolerated, the old Event Streams bindings removed, another binding kept"
else
  fail "re-run: existing policies tolerated, the old Event Streams bindings removed, another binding kept" \
    "$granted of $policies policies 'already granted'" "$(ls "$work/state/binding")"
fi

# A third run: nothing left to unbind, and still nothing bound (each bind would mint a credential).
: >"$work/log"
if deploy IMAGE_TAG=v2 && ! grep -q -e '^ce application unbind' -e '^ce application bind' "$work/log" &&
  [[ $(grep -c '^ce application update' "$work/log") == 4 ]]; then
  pass "third run: no unbind, no bind, four updates"
else
  fail "third run: no unbind, no bind, four updates" "$(grep '^ce application' "$work/log")" "$(tail -n 3 "$work/out")"
fi

# --- (b1) topic configs: the stand-in refuses what the CLI reference does not list; a drifted topic
# is reported, and updated only with ES_FIX_TOPIC_CONFIGS=true ----------------------------------
fake_es() {
  env FAKE_IBMCLOUD_STATE="$work/state" FAKE_IBMCLOUD_LOG="$work/fake.log" "$here/fake-ibmcloud/ibmcloud" "$@" >/dev/null 2>&1
}
refused=0
for call in "es topic-create --name x --partitions 1 --replication-factor 3" \
  "es topic-create --name x --partitions 1 --config max.message.bytes=1000" \
  "es topic-create --name x --partitions 1 --config-file f" \
  "es topic-update --name Customer.created --partitions 6 --config retention.ms=3600000"; do
  read -r -a args <<<"$call"
  fake_es "${args[@]}"
  [[ $? == 2 ]] && refused=$((refused + 1))
done
if ((refused == 4)) && fake_es es topic-create -n y -p 1 -c "retention.ms=3600000;cleanup.policy=delete" &&
  fake_es es topic-update y --config retention.ms=7200000 --default; then
  pass "stand-in: es topic-create/topic-update refuse flags and config keys the CLI reference does not list"
else
  fail "stand-in: es topic-create/topic-update refuse flags and config keys the CLI reference does not list" "$refused of 4 refused"
fi
rm -f "$work/state/topic/y"

# transaction.requested as the broker's default would leave it (24 h), Customer.created not compacted.
echo 3 >"$work/state/topic/transaction.requested"
printf '3\ncleanup.policy=delete\n' >"$work/state/topic/Customer.created"
: >"$work/log"
if deploy IMAGE_TAG=v2 SERVICES=customer-service &&
  grep -qxF '    WARNING: topic transaction.requested has retention.ms=86400000, expected 604800000 (deploy/topics.txt)' "$work/out" &&
  grep -qxF '    WARNING: topic Customer.created has cleanup.policy=delete, expected compact (deploy/topics.txt)' "$work/out" &&
  grep -q 'WARNING: 2 topic(s) keep configs that differ from deploy/topics.txt: Customer.created transaction.requested;.*ES_FIX_TOPIC_CONFIGS=true' "$work/out" &&
  ! grep -q '^es topic-update' "$work/log" && ! grep -q '^es topic-create' "$work/log"; then
  pass "drifted topics: one warning per config naming expected and actual, left as they are by default"
else
  fail "drifted topics: one warning per config naming expected and actual, left as they are by default" \
    "$(grep WARNING "$work/out")" "$(grep '^es topic-' "$work/log")"
fi
: >"$work/log"
if deploy IMAGE_TAG=v2 SERVICES=customer-service ES_FIX_TOPIC_CONFIGS=true &&
  [[ $(grep -c '^es topic-update' "$work/log") == 2 ]] &&
  grep -qxF 'es topic-update --name transaction.requested --config cleanup.policy=delete --config retention.ms=604800000' "$work/log" &&
  grep -qxF 'es topic-update --name Customer.created --config cleanup.policy=compact' "$work/log"; then
  pass "ES_FIX_TOPIC_CONFIGS=true: each drifted topic updated to its configs (es topic-update --config)"
else
  fail "ES_FIX_TOPIC_CONFIGS=true: each drifted topic updated to its configs (es topic-update --config)" "$(grep '^es topic-' "$work/log")" "$(tail -n 3 "$work/out")"
fi
: >"$work/log"
if deploy IMAGE_TAG=v2 SERVICES=customer-service && ! grep -q WARNING "$work/out" &&
  [[ $(grep -cE '^    [A-Za-z.]+ exists$' "$work/out") == 8 ]]; then
  pass "after the fix: every topic as in deploy/topics.txt, no warning"
else
  fail "after the fix: every topic as in deploy/topics.txt, no warning" "$(grep -e WARNING -e exists "$work/out")"
fi
if deploy IMAGE_TAG=v2 SERVICES=customer-service ES_FIX_TOPIC_CONFIGS=yes; then
  fail "ES_FIX_TOPIC_CONFIGS must be true or false" "deploy.sh exited 0"
else
  pass "ES_FIX_TOPIC_CONFIGS must be true or false"
fi

# --- (b2) key rotation: a new API key and an updated secret per service -----------------------------
: >"$work/log"
if deploy IMAGE_TAG=v2 ES_ROTATE_KEYS=true SERVICES=customer-service &&
  grep -q '^iam service-api-key-create ems-prod-customer-service-kafka-[0-9]* ems-prod-customer-service ' "$work/log" &&
  grep -q '^ce secret update --name customer-service-kafka --from-env-file <file:EVENT_STREAMS_KAFKA_BROKERS_SASL,EVENT_STREAMS_USER,EVENT_STREAMS_PASSWORD>' "$work/log" &&
  ! grep -q SECRET "$work/log" "$work/out"; then
  pass "ES_ROTATE_KEYS=true: a new key, the secret updated, the key never shown"
else
  fail "ES_ROTATE_KEYS=true: a new key, the secret updated, the key never shown" "$(grep -e api-key -e kafka "$work/log")" "$(tail -n 3 "$work/out")"
fi

# --- (b3) the database's CA goes into the <service>-db secret next to DATABASE_URL -------------------
: >"$work/log"
if deploy IMAGE_TAG=v2 SERVICES=customer-service DATABASE_URL_CUSTOMER_SERVICE='postgres://c:pw-SECRET-7@db/c?sslmode=verify-full' \
  DATABASE_CA_CERT_BASE64=Q0EtQkFTRTY0 &&
  grep -q '^ce secret update --name customer-service-db --from-env-file <file:DATABASE_URL,DATABASE_CA_CERT_BASE64>' "$work/log" &&
  ! grep -q SECRET "$work/log" "$work/out"; then
  pass "DATABASE_CA_CERT_BASE64: into the <service>-db secret, the password never shown"
else
  fail "DATABASE_CA_CERT_BASE64: into the <service>-db secret, the password never shown" "$(grep -e secret "$work/log")" "$(tail -n 3 "$work/out")"
fi

# --- (c0) a regional registry needs its IAM region ----------------------------------------------
fresh_state
if deploy ICR_REGISTRY=us.icr.io; then
  fail "a regional registry without ICR_REGION fails" "deploy.sh exited 0"
elif grep -q 'set ICR_REGION' "$work/out" && [[ ! -s $work/log ]]; then
  pass "a regional registry without ICR_REGION fails before any call"
else
  fail "a regional registry without ICR_REGION fails before any call" "$(cat "$work/out")"
fi
fresh_state
deploy "${secrets[@]}" ICR_REGISTRY=us.icr.io ICR_REGION=us-south >/dev/null
expect_call "a regional registry: the Reader policy is for its region" \
  "iam service-policy-create ems-prod-registry-pull" "--roles Reader" "--region us-south" "--resource ems"

# --- (c) a missing variable: a clear message and no CLI call ----------------------------------
fresh_state
if deploy CE_PROJECT= ES_INSTANCE=; then
  fail "missing variables fail" "deploy.sh exited 0"
elif grep -q 'missing required variable(s): CE_PROJECT ES_INSTANCE' "$work/out" && [[ ! -s $work/log ]]; then
  pass "missing variables fail with a clear message before any call"
else
  fail "missing variables fail with a clear message before any call" "$(cat "$work/out")" "calls: $(wc -l <"$work/log")"
fi

# --- (d) a secret neither given nor present -----------------------------------------------------
fresh_state
if deploy IBMCLOUD_API_KEY=k; then
  fail "missing database secret fails" "deploy.sh exited 0"
elif grep -q "secret 'customer-service-db' does not exist: set DATABASE_URL_CUSTOMER_SERVICE" "$work/out" &&
  ! grep -q '^ce application' "$work/log"; then
  pass "missing database secret fails before any application change"
else
  fail "missing database secret fails before any application change" "$(tail -n 3 "$work/out")"
fi

# --- (e) a failing step stops the run --------------------------------------------------------
fresh_state
deploy "${secrets[@]}" >/dev/null
: >"$work/log"
if FAKE_IBMCLOUD_FAIL="cr retention-policy-set" deploy IMAGE_TAG=v3; then
  fail "a failing step stops the run" "deploy.sh exited 0"
elif [[ $(tail -n 1 "$work/log") == "cr retention-policy-set --images 3 --force ems" ]] &&
  grep -q 'FAILED during step "registry retention: .*\[ibmcloud cr retention-policy-set --images 3 --force ems' "$work/out"; then
  pass "a failing step stops the run with the step's name"
else
  fail "a failing step stops the run with the step's name" "last call: $(tail -n 1 "$work/log")" "$(tail -n 3 "$work/out")"
fi

# --- (e1) an application that never becomes ready fails the deploy, with its status and logs ----------
# Every create/update waits (--wait --wait-timeout CE_APP_WAIT, never --no-wait); the stand-in keeps
# transaction-service from ever being ready. Nothing after it is rolled out.
: >"$work/log"
never_ready() { # checks what (e1) left; prints the problem
  grep -q -- '--no-wait' "$work/log" && { echo "a call did not wait: $(grep -- --no-wait "$work/log")"; return 1; }
  grep -q '^ce application update --name transaction-service .* --wait --wait-timeout 240$' "$work/log" ||
    { echo "the update did not wait 240 s"; return 1; }
  local tail_calls
  tail_calls=$(grep -A2 '^ce application update --name transaction-service' "$work/log" | tail -n 2)
  [[ $tail_calls == "ce application get --name transaction-service"$'\n'"ce application logs --application transaction-service --tail 50" ]] ||
    { echo "not followed by its status and logs: $tail_calls"; return 1; }
  grep -q -e '^ce application update --name notification-service' -e '^ce application update --name console' "$work/log" &&
    { echo "applications after it were still rolled out"; return 1; }
  grep -q 'FAILED: application transaction-service did not become ready' "$work/out" ||
    { echo "no failure naming the application"; return 1; }
  grep -q 'Status Summary: *Application deployment failed' "$work/out" || { echo "its status is not shown"; return 1; }
  grep -q 'cannot open database: connection refused' "$work/out" || { echo "its last log lines are not shown"; return 1; }
  [[ $(grep -c 'transaction-service-00002-deployment-fake/user-container' "$work/out") == 50 ]] ||
    { echo "not the last 50 log lines"; return 1; }
}
if FAKE_IBMCLOUD_NOT_READY=transaction-service deploy IMAGE_TAG=v4; then
  fail "an application that never gets ready fails the deploy" "deploy.sh exited 0"
elif out=$(never_ready); then
  pass "an application that never gets ready fails the deploy, showing its status and its last 50 log lines; nothing after it rolls out"
else
  fail "an application that never gets ready fails the deploy, showing its status and its last 50 log lines; nothing after it rolls out" \
    "$out" "$(tail -n 5 "$work/out")"
fi
# ...on a first deployment too (create waits as update does).
fresh_state
if FAKE_IBMCLOUD_NOT_READY=console deploy "${secrets[@]}"; then
  fail "a new application that never gets ready fails the first deployment" "deploy.sh exited 0"
elif grep -q '^ce application create --name console .* --wait --wait-timeout 240$' "$work/log" &&
  [[ $(tail -n 1 "$work/log") == "ce application logs --application console --tail 50" ]] &&
  grep -q 'FAILED: application console did not become ready' "$work/out"; then
  pass "a new application that never gets ready fails the first deployment (create waits), with status and logs"
else
  fail "a new application that never gets ready fails the first deployment (create waits), with status and logs" \
    "$(tail -n 3 "$work/log")" "$(tail -n 3 "$work/out")"
fi
# The waits fit the rollout budget, which fits the workflow job's timeout: checked before any call.
fresh_state
if deploy "${secrets[@]}" CE_APP_WAIT=301; then
  fail "waits beyond the rollout budget are refused" "deploy.sh exited 0"
elif grep -q '4 applications x CE_APP_WAIT=301s do not fit CE_ROLLOUT_BUDGET=1200s' "$work/out" && [[ ! -s $work/log ]]; then
  pass "waits beyond the rollout budget (4 x CE_APP_WAIT > CE_ROLLOUT_BUDGET) are refused before any call"
else
  fail "waits beyond the rollout budget (4 x CE_APP_WAIT > CE_ROLLOUT_BUDGET) are refused before any call" "$(tail -n 3 "$work/out")"
fi

# --- (e2) PostgreSQL bound as Event Streams once was: a binding with the prefix DATABASE ---------------
fresh_state
mkdir -p "$work/state/service-type"
echo databases-for-postgresql >"$work/state/service-type/ems-db"
no_db_urls=()
for assignment in "${secrets[@]}"; do
  [[ $assignment == DATABASE_URL_* ]] || no_db_urls+=("$assignment")
done
bound_database() { # checks a first deployment with POSTGRES_INSTANCE; prints the problem
  grep -q '^ce secret .*-db ' "$work/log" && { echo "a <service>-db secret was asked for"; return 1; }
  local service db expected
  for service in customer-service transaction-service notification-service; do
    db=${service//-/_}
    expected="ce application create --name $service --image icr.io/codeengine/helloworld --visibility project --min-scale 0 --max-scale 1 --wait --wait-timeout 240
ce application bind --name $service --service-instance ems-db --prefix DATABASE --wait --wait-timeout 240"
    [[ $(grep -A1 "^ce application create --name $service " "$work/log") == "$expected" ]] ||
      { echo "$service: not created as the sample, then bound:"; grep -A1 "^ce application create --name $service " "$work/log"; return 1; }
    grep -q "^ce application update --name $service --image icr.io/ems/$service:v1 .*--env DATABASE_NAME=$db .*--wait --wait-timeout 240\$" "$work/log" ||
      { echo "$service: not updated to its image with DATABASE_NAME=$db"; return 1; }
    grep "^ce application update --name $service " "$work/log" | grep -q -- "--env-from-secret $service-db" &&
      { echo "$service: still reads <service>-db"; return 1; }
    grep -q "^$service-binding-[0-9]* ems-db databases-for-postgresql Manager DATABASE\$" "$work/state/binding/$service" ||
      { echo "$service: no DATABASE binding recorded"; return 1; }
  done
  grep -q '^ce application bind --name console' "$work/log" && { echo "the console, which has no database, was bound"; return 1; }
  [[ $(grep -c '^ce application bind ' "$work/log") == 3 ]] || { echo "not three binds"; return 1; }
}
if deploy "${no_db_urls[@]}" POSTGRES_INSTANCE=ems-db && out=$(bound_database); then
  pass "POSTGRES_INSTANCE: each service with a database bound once (prefix DATABASE, DATABASE_NAME its own), no -db secret, the console not"
else
  fail "POSTGRES_INSTANCE: each service with a database bound once (prefix DATABASE, DATABASE_NAME its own), no -db secret, the console not" \
    "${out:-}" "$(tail -n 5 "$work/out")"
fi
# A re-run finds the bindings (in `ce application get --output json`) and neither binds nor unbinds.
: >"$work/log"
if deploy POSTGRES_INSTANCE=ems-db IMAGE_TAG=v2 && ! grep -q -e '^ce application bind' -e '^ce application unbind' "$work/log" &&
  [[ $(grep -c '^ce application update .* --wait --wait-timeout 240$' "$work/log") == 4 ]] &&
  [[ $(grep -c 'ems-db is bound (prefix DATABASE)' "$work/out") == 3 ]]; then
  pass "POSTGRES_INSTANCE re-run: the bindings are kept, nothing bound again, four waiting updates"
else
  fail "POSTGRES_INSTANCE re-run: the bindings are kept, nothing bound again, four waiting updates" "$(grep '^ce application' "$work/log")"
fi

# An application deployed with the <service>-db secret, then bound: the secret is detached (its
# DATABASE_URL would win over the binding).
fresh_state
deploy "${secrets[@]}" SERVICES="customer-service" >/dev/null
: >"$work/log"
if deploy POSTGRES_INSTANCE=ems-db IMAGE_TAG=v2 SERVICES=customer-service &&
  grep -q '^ce application bind --name customer-service --service-instance ems-db --prefix DATABASE' "$work/log" &&
  grep -q '^ce application update --name customer-service .*--env-from-secret-rm customer-service-db' "$work/log" &&
  ! grep -qx customer-service-db "$work/state/app/customer-service"; then
  pass "POSTGRES_INSTANCE on an application that read <service>-db: bound, the secret detached"
else
  fail "POSTGRES_INSTANCE on an application that read <service>-db: bound, the secret detached" \
    "$(grep '^ce application' "$work/log")" "$(cat "$work/state/app/customer-service")"
fi

# --- (e3) the registry's IAM policy: global registry = geography, regional = region -------------------
fresh_state
deploy "${secrets[@]}" >/dev/null
registry_policy=$(grep '^iam service-policy-create ems-prod-registry-pull ' "$work/log")
if [[ $registry_policy == *" --attributes geography=global "* && $registry_policy != *" --region "* ]] &&
  grep -qx 'cr region-set global' "$work/log"; then
  pass "global registry icr.io: the pull policy has --attributes geography=global and no --region"
else
  fail "global registry icr.io: the pull policy has --attributes geography=global and no --region" "$registry_policy"
fi
fresh_state
if deploy "${secrets[@]}" ICR_REGION=us-south; then
  fail "icr.io with a region is refused" "deploy.sh exited 0"
elif grep -q 'icr.io is the global registry: ICR_REGION must be global' "$work/out" && [[ ! -s $work/log ]]; then
  pass "icr.io with a regional ICR_REGION is refused before any call"
else
  fail "icr.io with a regional ICR_REGION is refused before any call" "$(tail -n 3 "$work/out")"
fi
if FAKE_IBMCLOUD_STATE="$work/state" FAKE_IBMCLOUD_LOG="$work/fake.log" "$here/fake-ibmcloud/ibmcloud" \
  iam service-policy-create ems-prod-registry-pull --roles Reader --service-name container-registry --region global \
  --resource-type namespace --resource ems >/dev/null 2>&1; then
  fail "stand-in: a container-registry policy with --region global fails" "it succeeded"
else
  pass "stand-in: a container-registry policy with --region global fails (IBM: global is a geography)"
fi

# --- (e4) the registry retention policy, N configurable -------------------------------------------
fresh_state
if deploy "${secrets[@]}" ICR_KEEP_IMAGES=5 && grep -qx 'cr retention-policy-set --images 5 --force ems' "$work/log" &&
  [[ $(cat "$work/state/retention/ems") == 5 ]] && ! deploy IMAGE_TAG=v2 ICR_KEEP_IMAGES=0; then
  pass "ICR_KEEP_IMAGES: the newest N images kept (cr retention-policy-set --images N --force NAMESPACE); 0 refused"
else
  fail "ICR_KEEP_IMAGES: the newest N images kept (cr retention-policy-set --images N --force NAMESPACE); 0 refused" "$(grep '^cr ' "$work/log")"
fi

# --- (e4b) the console's key: one of API_KEYS, with the three read scopes only ----------------------
fresh_state
console_key_refused() { # API_KEYS CONSOLE_API_KEY expected-message
  fresh_state
  ! deploy "${no_keys[@]}" "API_KEYS=$1" "CONSOLE_API_KEY=$2" && grep -q -- "$3" "$work/out" &&
    ! grep -q '^ce secret create --name api-keys' "$work/log" && ! grep -q SECRET "$work/out"
}
digest=$(printf %s key-SECRET-10-0123456789abcdef | sha256sum | cut -d' ' -f1)
if console_key_refused "ops:customers:read:key-SECRET-6-0123456789abcdef" key-SECRET-10-0123456789abcdef \
  "CONSOLE_API_KEY is not one of API_KEYS" &&
  console_key_refused "console:customers:read+transactions:read+notifications:read+customers:write:sha256:$digest" \
    key-SECRET-10-0123456789abcdef "CONSOLE_API_KEY has the scopes customers:read+customers:write+notifications:read+transactions:read" &&
  fresh_state && deploy "${no_keys[@]}" "API_KEYS=console:customers:read+transactions:read+notifications:read:sha256:$digest" \
    CONSOLE_API_KEY=key-SECRET-10-0123456789abcdef; then
  pass "CONSOLE_API_KEY: refused unless one of API_KEYS (value or digest) with exactly the three read scopes"
else
  fail "CONSOLE_API_KEY: refused unless one of API_KEYS (value or digest) with exactly the three read scopes" "$(tail -n 3 "$work/out")"
fi

# --- (e5) the stand-in refuses flags IBM's CLI reference does not list for the command ----------------
refused=0
for call in "ce application create --name x --image y --env-file f" \
  "ce application update --name x --wait-seconds 10" \
  "ce application bind --name x --service-instance y --env-prefix Z" \
  "ce application logs --application x --lines 50" \
  "iam service-policy-create s --roles Reader --service-name container-registry --namespace ems" \
  "cr retention-policy-set --keep 3 ems" \
  "ce secret create --name s --from-env-file-path f"; do
  read -r -a args <<<"$call"
  fake_es "${args[@]}"
  [[ $? == 2 ]] && refused=$((refused + 1))
done
if ((refused == 7)) && FAKE_IBMCLOUD_STATE="$work/state" FAKE_IBMCLOUD_LOG="$work/fake.log" "$here/fake-ibmcloud/ibmcloud" \
  ce application logs -n customer-service --tail 2 --timestamps >/dev/null 2>&1; then
  pass "stand-in: flags outside IBM's CLI reference are refused (7 cases), listed aliases accepted"
else
  fail "stand-in: flags outside IBM's CLI reference are refused (7 cases), listed aliases accepted" "$refused of 7 refused"
fi

# --- (f) the console alone, before the services it reads: a clear failure, no application change ---
fresh_state
if deploy IBMCLOUD_API_KEY=k SERVICES=console; then
  fail "the console before its services fails" "deploy.sh exited 0"
elif grep -q "the console reads customer-service, which is not deployed" "$work/out" &&
  ! grep -q '^ce application \(create\|update\)' "$work/log" && ! grep -q '^ce secret .*-db' "$work/log"; then
  pass "the console before its services fails clearly, asks for no database secret, changes nothing"
else
  fail "the console before its services fails clearly, asks for no database secret, changes nothing" \
    "$(tail -n 3 "$work/out")" "$(grep '^ce ' "$work/log")"
fi

# --- (g) no API keys given or kept: made once, the operator's key shown once and stored as a digest ---
fresh_state
generated_keys() { # checks what (g) made; prints the problem
  local ops api_keys console_key
  ops=$(sed -n 's/^      ops: \(.*\)$/\1/p' "$work/out")
  [[ ${#ops} -ge 24 ]] || { echo "no key of at least 24 characters shown: '$ops'"; return 1; }
  [[ $(grep -c -F -- "$ops" "$work/out") == 1 ]] || { echo "the key is shown more than once"; return 1; }
  grep -q -F -- "$ops" "$work/log" "$work/state/secret-values/"* && { echo "the plain key was stored or passed"; return 1; }
  api_keys=$(sed -n 's/^API_KEYS=//p' "$work/state/secret-values/api-keys")
  console_key=$(sed -n 's/^CONSOLE_API_KEY=//p' "$work/state/secret-values/console-api-key")
  local every="customers:read+customers:write+transactions:read+transactions:write+notifications:read+console:read"
  local reads="customers:read+transactions:read+notifications:read"
  local expected
  expected="ops:$every:sha256:$(printf %s "$ops" | sha256sum | cut -d' ' -f1),console:$reads:sha256:$(printf %s "$console_key" | sha256sum | cut -d' ' -f1)"
  [[ $api_keys == "$expected" ]] || { echo "api-keys holds '$api_keys', expected '$expected'"; return 1; }
  [[ ${#console_key} -ge 24 ]] || { echo "the console's key is short"; return 1; }
  grep -q '^ce application create --name console .*--env-from-secret console-api-key' "$work/log" ||
    { echo "the console does not get console-api-key"; return 1; }
  [[ $(grep -c '^ce application create .*--env-from-secret api-keys' "$work/log") == 4 ]] ||
    { echo "not every application gets api-keys"; return 1; }
}
if deploy "${no_keys[@]}" && out=$(generated_keys); then
  pass "no API keys: made once, the key shown once and stored as its SHA-256 digest, the console's key apart"
else
  fail "no API keys: made once, the key shown once and stored as its SHA-256 digest, the console's key apart" \
    "${out:-}" "$(tail -n 5 "$work/out")"
fi
# ...and a re-run keeps them, showing nothing.
: >"$work/log"
if deploy IMAGE_TAG=v2 && ! grep -q -e '^      ops: ' "$work/out" && ! grep -q '^ce secret \(create\|update\) --name api-keys' "$work/log"; then
  pass "no API keys on a re-run: the kept keys are used, nothing shown"
else
  fail "no API keys on a re-run: the kept keys are used, nothing shown" "$(grep api-keys "$work/log")"
fi

# --- (h) in CI no key is made (a log is no place to show one): a clear failure --------------------
fresh_state
if deploy "${no_keys[@]}" CI=true; then
  fail "no API keys in CI fails" "deploy.sh exited 0"
elif grep -q "secret 'api-keys' does not exist: set API_KEYS and CONSOLE_API_KEY" "$work/out" &&
  ! grep -q '^ce application \(create\|update\)' "$work/log" && ! grep -q '^ce secret create --name api-keys' "$work/log"; then
  pass "no API keys in CI: a clear failure before any application change"
else
  fail "no API keys in CI: a clear failure before any application change" "$(tail -n 3 "$work/out")"
fi

# --- (i) API_KEYS without the console's key: a clear failure -------------------------------------
fresh_state
if deploy "${no_keys[@]}" API_KEYS=key-SECRET-9; then
  fail "API_KEYS without CONSOLE_API_KEY fails" "deploy.sh exited 0"
elif grep -q "secret 'console-api-key' does not exist: set CONSOLE_API_KEY" "$work/out" &&
  ! grep -q '^ce application \(create\|update\)' "$work/log" && ! grep -q SECRET "$work/out" "$work/log"; then
  pass "API_KEYS without CONSOLE_API_KEY: a clear failure before any application change"
else
  fail "API_KEYS without CONSOLE_API_KEY: a clear failure before any application change" "$(tail -n 3 "$work/out")"
fi

if ((failures)); then
  echo "codeengine_test: $failures case(s) failed"
  exit 1
fi
echo "codeengine_test: all cases passed"
