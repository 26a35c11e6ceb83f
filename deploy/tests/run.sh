#!/usr/bin/env bash
# The deployment test suite (called by `cargo xtask test`; runs alone too):
#   deploy/tests/run.sh              every check, ending with the release build of the services
#   deploy/tests/run.sh --no-build   every check but the release build
# Installs what it needs when missing: shellcheck and promtool (apt: shellcheck, prometheus), actionlint and kustomize (go install, pinned,
# kept in ${XDG_CACHE_HOME:-~/.cache}/event-microservices/bin), PyYAML (pip, else apt python3-yaml).
# Prints PASS/FAIL per check and ends with the line "N passed, M failed"; exits 1 on any failure.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 1
TESTS=deploy/tests

# The one release build: the Dockerfiles run exactly this command (the "dockerfiles" check compares).
RELEASE_BUILD="cargo build --release --locked -p customer-service -p transaction-service -p notification-service -p console"
ACTIONLINT_VERSION=v1.7.12
KUSTOMIZE_VERSION=v5.8.1
TOOLS="${XDG_CACHE_HOME:-$HOME/.cache}/event-microservices/bin"

build=true
for arg in "$@"; do
  case $arg in
    --no-build) build=false ;;
    *) echo "usage: $0 [--no-build]" >&2; exit 2 ;;
  esac
done

passed=0
failed=0
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# check NAME COMMAND...: runs the command, PASS on exit 0, else FAIL with its output.
check() {
  local name=$1
  shift
  if "$@" >"$scratch/out" 2>&1; then
    echo "PASS $name"
    passed=$((passed + 1))
  else
    echo "FAIL $name"
    sed 's/^/    /' "$scratch/out" | tail -n 40
    failed=$((failed + 1))
  fi
}

# ------------------------------------------------------------------------------------------ tools
as_root() { if ((EUID == 0)); then "$@"; else sudo "$@"; fi; }

ensure_shellcheck() {
  command -v shellcheck >/dev/null && return 0
  echo "installing shellcheck (apt)"
  as_root apt-get install -y -qq shellcheck >/dev/null 2>&1 ||
    { as_root apt-get update -qq >/dev/null 2>&1 && as_root apt-get install -y -qq shellcheck >/dev/null 2>&1; }
}

# promtool (Prometheus' rule and config checker) comes with Debian's prometheus package; the
# monitoring checks fail without it (they are not skipped).
ensure_promtool() {
  command -v promtool >/dev/null && return 0
  echo "installing promtool (apt: prometheus)"
  as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 ||
    { as_root apt-get update -qq >/dev/null 2>&1 &&
      as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1; }
}

# go_tool NAME MODULE VERSION: the pinned tool from the cache, built with `go install` when absent.
go_tool() {
  local name=$1 module=$2 version=$3 bin="$TOOLS/$1-$3"
  if [[ ! -x $bin ]]; then
    command -v go >/dev/null || { echo "go is needed to install $name" >&2; return 1; }
    echo "installing $name $version (go install)" >&2
    mkdir -p "$TOOLS/.build-$name"
    GOBIN="$TOOLS/.build-$name" go install "$module@$version" >&2 || return 1
    mv "$TOOLS/.build-$name/$name" "$bin"
  fi
  printf '%s' "$bin"
}

ensure_pyyaml() {
  python3 -c 'import yaml' 2>/dev/null && return 0
  echo "installing PyYAML"
  python3 -m pip install --quiet pyyaml 2>/dev/null ||
    python3 -m pip install --quiet --user pyyaml 2>/dev/null ||
    as_root apt-get install -y -qq python3-yaml >/dev/null 2>&1
  python3 -c 'import yaml'
}

# validate: deploy/tests/validate (compose-go, k8s.io/api), built once per version of its source.
validator() {
  local hash bin
  hash=$(cat $TESTS/validate/go.mod $TESTS/validate/go.sum $TESTS/validate/*.go | sha256sum | cut -c1-16)
  bin="$TOOLS/validate-$hash"
  if [[ ! -x $bin ]]; then
    command -v go >/dev/null || { echo "go is needed to build deploy/tests/validate" >&2; return 1; }
    echo "building deploy/tests/validate (go build)" >&2
    mkdir -p "$TOOLS" && (cd $TESTS/validate && go build -o "$bin" .) >&2 || return 1
  fi
  printf '%s' "$bin"
}

ensure_shellcheck
ensure_promtool
ensure_pyyaml
validate=$(validator) || validate=""
actionlint=$(go_tool actionlint github.com/rhysd/actionlint/cmd/actionlint "$ACTIONLINT_VERSION") || actionlint=""
kustomize=$(go_tool kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION") || kustomize=""

# ----------------------------------------------------------------------------------------- checks
shell_scripts() {
  git ls-files --cached --others --exclude-standard -- deploy .ci |
    while read -r f; do
      [[ -f $f ]] || continue
      case $f in
        *.sh) echo "$f" ;;
        *) head -n 1 "$f" | grep -qE '^#!.*(ba|)sh' && echo "$f" ;;
      esac
    done
}
shellcheck_all() {
  command -v shellcheck >/dev/null || { echo "shellcheck is not installed"; return 1; }
  mapfile -t files < <(shell_scripts)
  ((${#files[@]} > 0)) || { echo "no shell scripts found"; return 1; }
  echo "${#files[@]} scripts: ${files[*]}"
  shellcheck "${files[@]}"
}
check "shellcheck: every shell script under deploy/ and .ci/" shellcheck_all

actionlint_all() {
  [[ -n $actionlint ]] || { echo "actionlint $ACTIONLINT_VERSION could not be installed"; return 1; }
  "$actionlint" .github/workflows/*.yml
}
check "actionlint: .github/workflows" actionlint_all
check "workflows: fmt, clippy, xtask test; actions pinned by SHA; deploy after CI passed, each image built once, tagged by SHA" \
  python3 $TESTS/checks.py workflows

check "codeengine: deploy.sh against a stand-in ibmcloud (first run, re-run, failures)" \
  bash $TESTS/codeengine_test.sh

validate() {
  [[ -n $validate ]] || { echo "deploy/tests/validate could not be built"; return 1; }
  "$validate" "$@"
}
check "compose: docker-compose.yml against the Compose Specification (compose-go)" validate compose docker-compose.yml
check "compose: services, depends_on, healthchecks, wiring" python3 $TESTS/checks.py compose

compose_topics() { # create-topics.sh against stand-ins for kafka-topics.sh and kafka-configs.sh
  local calls="$scratch/kafka-tools.calls" topics="$scratch/kafka-topics.sh" configs="$scratch/kafka-configs.sh"
  printf '#!/usr/bin/env bash\necho "topics $*" >>%q\n' "$calls" >"$topics" && chmod +x "$topics"
  printf '#!/usr/bin/env bash\necho "configs $*" >>%q\n' "$calls" >"$configs" && chmod +x "$configs"
  KAFKA_BOOTSTRAP_SERVER=kafka:19092 KAFKA_TOPICS="$topics" KAFKA_CONFIGS="$configs" TOPICS_FILE=deploy/topics.txt \
    bash deploy/compose/create-topics.sh || return 1
  local expected=0 name pairs pair create
  while read -r name pairs; do
    [[ -z $name || $name == \#* ]] && continue
    expected=$((expected + 2))
    create="topics --bootstrap-server kafka:19092 --create --if-not-exists --topic $name --partitions 3 --replication-factor 1"
    for pair in $pairs; do create+=" --config $pair"; done
    grep -qxF -- "$create" "$calls" || { echo "no idempotent create of $name with its configs ($create)"; return 1; }
    grep -qxF -- "configs --bootstrap-server kafka:19092 --alter --entity-type topics --entity-name $name --add-config ${pairs// /,}" "$calls" ||
      { echo "configs of $name not set on an existing topic"; return 1; }
  done <deploy/topics.txt
  ((expected == 16)) || { echo "expected 8 topics in deploy/topics.txt, found $((expected / 2))"; return 1; }
  [[ $(wc -l <"$calls") == "$expected" ]] || { echo "expected $expected calls:"; cat "$calls"; return 1; }
  local figure
  for figure in "transaction.requested .*--config retention.ms=604800000" "Customer.created .*--config cleanup.policy=compact" \
    "transaction.failed.DLT .*--config retention.ms=2592000000"; do
    grep -q -- "--topic $figure" "$calls" || { echo "the retention figures (7 days, compacted, 30 days): no '$figure'"; return 1; }
  done
}
check "compose: create-topics.sh creates every topic and .DLT with its configs (--if-not-exists) and sets them on existing ones" compose_topics
check "topics: deploy/topics.txt matches crates/contracts topics" python3 $TESTS/checks.py topics

promtool_() {
  command -v promtool >/dev/null || { echo "promtool is not installed (Debian package prometheus)"; return 1; }
  promtool "$@"
}
check "monitoring: promtool check config deploy/monitoring/prometheus.yml (and its alerts.yml)" \
  promtool_ check config deploy/monitoring/prometheus.yml
check "monitoring: promtool check rules deploy/monitoring/alerts.yml" \
  promtool_ check rules deploy/monitoring/alerts.yml
check "monitoring: promtool test rules deploy/monitoring/alerts_test.yml (each alert fires and stays silent)" \
  promtool_ test rules deploy/monitoring/alerts_test.yml
monitoring() { # structure, then every dashboard query parsed by promtool as a recording rule
  python3 $TESTS/checks.py monitoring "$scratch/dashboard-rules.yml" &&
    promtool_ check rules "$scratch/dashboard-rules.yml"
}
check "monitoring: scrape jobs, alerts' runbooks and tests, Grafana dashboard queries and provisioning, compose profile" \
  monitoring

k8s() {
  [[ -n $kustomize ]] || { echo "kustomize $KUSTOMIZE_VERSION could not be installed"; return 1; }
  "$kustomize" build deploy/k8s >"$scratch/k8s.yaml" || return 1
  python3 $TESTS/checks.py k8s "$scratch/k8s.yaml"
}
check "k8s: kustomize build + Deployments, probes, preStop, image tags, pull secrets, security, Services, PDBs, config refs, required API keys" k8s
check "k8s: api-keys.sh makes the Secret ems-api-keys (digests, scopes), the key shown once" \
  python3 $TESTS/checks.py k8s-api-keys
k8s_types() {
  [[ -s $scratch/k8s.yaml ]] || { echo "nothing rendered (see the kustomize check)"; return 1; }
  validate k8s "$scratch/k8s.yaml" && validate k8s deploy/k8s/secret.template.yaml
}
check "k8s: every manifest decodes strictly into its Kubernetes API type (k8s.io/api)" k8s_types

dockerfiles_parse() {
  local f
  for f in deploy/docker/Dockerfile deploy/docker/Dockerfile.*; do validate dockerfile "$f" || return 1; done
}
check "dockerfiles: BuildKit's Dockerfile parser and linter accept all of them" dockerfiles_parse
check "dockerfiles: shared pattern, generated files current, build command = '$RELEASE_BUILD'" \
  python3 $TESTS/checks.py dockerfiles "$RELEASE_BUILD"
check "dockerignore: the workspace is in the build context, .git/target are not" \
  python3 $TESTS/checks.py dockerignore

healthcheck() { # the image's HEALTHCHECK script against a local HTTP server: 200 ok, 404 and no server fail
  mkdir -p "$scratch/www" && echo ok >"$scratch/www/healthz"
  local port pid rc=0
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  python3 -m http.server "$port" --bind 127.0.0.1 --directory "$scratch/www" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 50); do PORT=$port bash deploy/docker/healthcheck.sh 2>/dev/null && break; sleep 0.1; done
  PORT=$port bash deploy/docker/healthcheck.sh || { echo "healthy server reported unhealthy"; rc=1; }
  PORT=$port bash deploy/docker/healthcheck.sh /missing 2>/dev/null && { echo "404 reported healthy"; rc=1; }
  kill "$pid" && wait "$pid" 2>/dev/null
  PORT=$port bash deploy/docker/healthcheck.sh 2>/dev/null && { echo "no server reported healthy"; rc=1; }
  return "$rc"
}
check "healthcheck.sh: 2xx healthy, 404 and refused unhealthy" healthcheck

if $build; then
  # Last: the same command the Dockerfiles run (honours CARGO_TARGET_DIR).
  read -r -a release_build <<<"$RELEASE_BUILD"
  check "release build: $RELEASE_BUILD" "${release_build[@]}"
fi

echo "$passed passed, $failed failed"
((failed == 0))
