#!/usr/bin/env python3
"""Structural checks of the deployment files, one sub-command per check (run by deploy/tests/run.sh).

Each prints what is wrong and exits 1, or exits 0 silently. Paths are relative to the repository root.
  compose                       docker-compose.yml
  k8s RENDERED.yaml             deploy/k8s (the kustomize output, plus the files themselves)
  k8s-api-keys                  deploy/k8s/api-keys.sh: the Secret it makes, the key shown once
  dockerfiles "CARGO BUILD"     deploy/docker/Dockerfile*: the build command, the image shape
  dockerignore                  .dockerignore keeps the workspace in the build context
  topics                        deploy/topics.txt against crates/contracts/src/topics.rs
  workflows                     .github/workflows: the steps the team relies on
  monitoring DASHBOARD-RULES    deploy/monitoring: scrape jobs, alerts, their tests and runbooks, the
                                Grafana dashboard and provisioning; writes the dashboard's queries as
                                recording rules to DASHBOARD-RULES for `promtool check rules`
"""
import functools
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
problems: list[str] = []


def problem(msg: str) -> None:
    problems.append(msg)


def load_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        problem(f"{path.relative_to(ROOT)}: not valid YAML: {e}")
        return None


@functools.cache
def services_table() -> dict[str, tuple[int, bool]]:
    """deploy/services.txt: service -> (port, has its own PostgreSQL database)."""
    out = {}
    for line in (ROOT / "deploy/services.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            fields = line.split()
            if len(fields) != 3 or not fields[1].isdigit() or fields[2] not in ("postgres", "-"):
                problem(f"deploy/services.txt: '{line}' is not '<service> <port> postgres|-'")
                continue
            out[fields[0]] = (int(fields[1]), fields[2] == "postgres")
    return out


def services_ports() -> dict[str, int]:
    return {name: port for name, (port, _) in services_table().items()}


def has_database(name: str) -> bool:
    return services_table()[name][1]


def url_variables(name: str) -> set[str]:
    """The <OTHER>_SERVICE_URL variables the service's source reads (where it finds the others)."""
    found = set()
    for f in (ROOT / "services" / name / "src").rglob("*.rs"):
        found |= set(re.findall(r'"([A-Z][A-Z_]*_SERVICE_URL)"', f.read_text()))
    return found


def url_target(variable: str) -> str:
    """CUSTOMER_SERVICE_URL -> customer-service."""
    return variable.removesuffix("_URL").lower().replace("_", "-")


# ----------------------------------------------------------------------------------------- compose
def check_compose() -> None:
    doc = load_yaml(ROOT / "docker-compose.yml")
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
        problem("docker-compose.yml: no services mapping")
        return
    services: dict = doc["services"]
    declared_volumes = set((doc.get("volumes") or {}).keys())
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}

    def deps(svc: dict) -> dict:
        d = svc.get("depends_on") or {}
        return {k: {"condition": "service_started"} for k in d} if isinstance(d, list) else d

    one_shots = {
        dep
        for svc in services.values()
        for dep, spec in deps(svc).items()
        if (spec or {}).get("condition") == "service_completed_successfully"
    }
    for name, svc in services.items():
        if not isinstance(svc, dict):
            problem(f"service {name}: not a mapping")
            continue
        image = svc.get("image", "")
        if "build" not in svc and (":" not in image or image.endswith(":latest")):
            problem(f"service {name}: image '{image}' is not pinned to a version")
        for dep, spec in deps(svc).items():
            if dep not in services:
                problem(f"service {name}: depends_on '{dep}', which is not a service")
                continue
            cond = (spec or {}).get("condition", "service_started")
            if cond not in conditions:
                problem(f"service {name}: depends_on {dep} has unknown condition '{cond}'")
            if cond == "service_healthy" and not (services[dep] or {}).get("healthcheck", {}).get("test"):
                problem(f"service {name}: waits for {dep} to be healthy, but {dep} has no healthcheck")
        if name not in one_shots:
            hc = svc.get("healthcheck") or {}
            if not hc.get("test") or hc.get("disable"):
                problem(f"service {name}: no healthcheck")
        elif svc.get("restart", "no") != "no":
            problem(f"service {name}: a one-shot step must not restart (restart: 'no')")
        for vol in svc.get("volumes") or []:
            source = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            if source.startswith((".", "/")):
                if not (ROOT / source).exists():
                    problem(f"service {name}: mounts {source}, which does not exist")
            elif source not in declared_volumes:
                problem(f"service {name}: volume '{source}' is not declared under volumes:")

    kafka_ports = set()
    kafka = services.get("kafka") or {}
    for listener in str((kafka.get("environment") or {}).get("KAFKA_ADVERTISED_LISTENERS", "")).split(","):
        m = re.match(r"\w+://kafka:(\d+)$", listener.strip())
        if m:
            kafka_ports.add(m.group(1))
    if not kafka_ports:
        problem("kafka: no listener advertised as kafka:<port> for the other containers")
    if not str(kafka.get("image", "")).startswith("apache/kafka:4."):
        problem("kafka: not the official apache/kafka 4.x image")

    init_sql = (ROOT / "deploy/compose/postgres-init.sql").read_text()
    databases = set(re.findall(r"CREATE DATABASE (\w+)", init_sql))
    # Closed unless said otherwise: every published port is on loopback (anonymous access, where
    # allowed, stays on this machine), and Grafana has no default admin password.
    for name, svc in services.items():
        for p in svc.get("ports") or []:
            if not str(p).startswith("127.0.0.1:"):
                problem(f"{name}: port '{p}' is published beyond 127.0.0.1")
        if str((svc.get("environment") or {}).get("ALLOW_ANONYMOUS", "")).lower() == "true" and not svc.get("ports"):
            problem(f"{name}: ALLOW_ANONYMOUS without a loopback-only published port")
    grafana = services.get("grafana") or {}
    password = str((grafana.get("environment") or {}).get("GF_SECURITY_ADMIN_PASSWORD", ""))
    if password != "${GRAFANA_ADMIN_PASSWORD:-}" or "GF_SECURITY_ADMIN_PASSWORD" not in json.dumps(grafana.get("entrypoint")):
        problem("grafana: the admin password must come from GRAFANA_ADMIN_PASSWORD, with no default, and be required at start")
    init = services.get("kafka-init") or {}
    if "service_completed_successfully" not in json.dumps(init) and "kafka-init" not in one_shots:
        problem("kafka-init: no service waits for it to complete")
    for name, port in services_ports().items():
        svc = services.get(name)
        if not svc:
            problem(f"{name}: missing from docker-compose.yml")
            continue
        build = svc.get("build") or {}
        if build.get("dockerfile") != f"deploy/docker/Dockerfile.{name}" or build.get("context") != ".":
            problem(f"{name}: must build deploy/docker/Dockerfile.{name} with the repository root as context")
        env = svc.get("environment") or {}
        if str(env.get("PORT")) != str(port) or f"127.0.0.1:{port}:{port}" not in [str(p) for p in svc.get("ports", [])]:
            problem(f"{name}: PORT / published port is not 127.0.0.1:{port}")
        if env.get("API_KEYS") != "${API_KEYS:-}":
            problem(f"{name}: API_KEYS is not taken from the environment (${{API_KEYS:-}})")
        if name == "console" and env.get("CONSOLE_API_KEY") != "${CONSOLE_API_KEY:-}":
            problem(f"{name}: CONSOLE_API_KEY is not taken from the environment")
        own_db = name.replace("-", "_")
        d = deps(svc)
        needed = [("kafka", "service_healthy"), ("kafka-init", "service_completed_successfully")]
        if has_database(name):
            m = re.match(r"postgres://[^@]+@postgres:5432/(\w+)$", str(env.get("DATABASE_URL", "")))
            if own_db not in databases:
                problem(f"{name}: postgres-init.sql creates no database {own_db}")
            if not m or m.group(1) != own_db:
                problem(f"{name}: DATABASE_URL is not its own database {own_db} on the postgres service")
            needed.append(("postgres", "service_healthy"))
        else:
            if "DATABASE_URL" in env:
                problem(f"{name}: has no database (deploy/services.txt) but sets DATABASE_URL")
            if "postgres" in d:
                problem(f"{name}: has no database (deploy/services.txt) but depends on postgres")
        brokers = str(env.get("KAFKA_BROKERS", ""))
        if not all(b.startswith("kafka:") and b.split(":")[1] in kafka_ports for b in brokers.split(",")):
            problem(f"{name}: KAFKA_BROKERS '{brokers}' is not the kafka service's internal listener")
        for dep, cond in needed:
            if (d.get(dep) or {}).get("condition") != cond:
                problem(f"{name}: must depend on {dep} with condition {cond}")
        ports = services_ports()
        for var in sorted(url_variables(name) | {v for v in env if v.endswith("_SERVICE_URL")}):
            target = url_target(var)
            if target not in ports:
                problem(f"{name}: {var} names no service of deploy/services.txt")
            elif str(env.get(var)) != f"http://{target}:{ports[target]}":
                problem(f"{name}: {var} is '{env.get(var)}', not http://{target}:{ports[target]}")
            elif target not in d:
                problem(f"{name}: reads {target} ({var}) but does not depend on it")
        if env.get("KAFKA_TOPIC_PARTITIONS") != (init.get("environment") or {}).get("KAFKA_TOPIC_PARTITIONS"):
            problem(f"{name}: KAFKA_TOPIC_PARTITIONS differs from kafka-init's")
    notif = (services.get("notification-service") or {}).get("environment") or {}
    if not str(notif.get("SMTP_URL", "")).startswith("smtp://mailpit:"):
        problem("notification-service: SMTP_URL does not point at the mailpit service")
    if "mailpit" not in deps(services.get("notification-service") or {}):
        problem("notification-service: does not wait for mailpit")


# --------------------------------------------------------------------------------------------- k8s
def check_k8s(rendered: Path) -> None:
    k8s = ROOT / "deploy/k8s"
    for f in sorted(k8s.rglob("*.yaml")):
        try:
            list(yaml.safe_load_all(f.read_text()))
        except yaml.YAMLError as e:
            problem(f"{f.relative_to(ROOT)}: not valid YAML: {e}")
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    by_kind: dict[str, dict[str, dict]] = {}
    for d in docs:
        for field in ("apiVersion", "kind", "metadata"):
            if field not in d:
                problem(f"a rendered document lacks {field}: {str(d)[:80]}")
        by_kind.setdefault(d.get("kind"), {})[d.get("metadata", {}).get("name")] = d
    configmaps = by_kind.get("ConfigMap", {})
    templates = [d for d in yaml.safe_load_all((k8s / "secret.template.yaml").read_text()) if d]
    template_secrets = {d["metadata"]["name"]: d for d in templates if d.get("kind") == "Secret"}
    for name, d in template_secrets.items():
        for key, value in (d.get("stringData") or {}).items():
            if value not in ("REPLACE_ME", "token"):
                problem(f"secret.template.yaml: {name}.{key} holds a value; only REPLACE_ME placeholders belong there")
        if d.get("data"):
            problem(f"secret.template.yaml: {name} has base64 data; use stringData placeholders")
    if "Secret" in by_kind:
        problem("the kustomization renders a Secret; secrets must stay out of the repository")
    if "Namespace" not in by_kind:
        problem("no Namespace rendered")
    # Only what must talk, talks: ingress denied by default, the HTTP port opened to the console
    # and to namespaces labelled as HTTP clients.
    policies = by_kind.get("NetworkPolicy", {})
    deny = [p for p in policies.values() if (p.get("spec") or {}).get("podSelector") == {}
            and (p.get("spec") or {}).get("policyTypes") == ["Ingress"] and not (p.get("spec") or {}).get("ingress")]
    if not deny:
        problem("no NetworkPolicy denies ingress by default (podSelector {}, policyTypes [Ingress], no rules)")
    allowed_ports = {port.get("port") for p in policies.values() for rule in (p.get("spec") or {}).get("ingress") or []
                     for port in rule.get("ports") or []}
    if allowed_ports != {8080}:
        problem(f"NetworkPolicies open ports {sorted(allowed_ports, key=str)}, not just the HTTP port 8080")

    def matches(selector: dict, labels: dict) -> bool:
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

    deployments = by_kind.get("Deployment", {})
    for name, port in services_ports().items():
        dep = deployments.get(name)
        if not dep:
            problem(f"{name}: no Deployment")
            continue
        spec = dep.get("spec", {})
        pod = spec.get("template", {})
        pod_labels = pod.get("metadata", {}).get("labels", {})
        selector = spec.get("selector", {}).get("matchLabels", {})
        if not matches(selector, pod_labels):
            problem(f"{name}: Deployment selector does not match its pod labels")
        others = [n for n, o in deployments.items() if n != name and matches(selector, o["spec"]["template"]["metadata"].get("labels", {}))]
        if others:
            problem(f"{name}: Deployment selector also matches {others}")
        pod_spec = pod.get("spec", {})
        psc = pod_spec.get("securityContext", {})
        containers = pod_spec.get("containers", [])
        if len(containers) != 1:
            problem(f"{name}: expected one container")
            continue
        c = containers[0]
        if not re.match(rf"[^/\s]+/[^/\s]+/{name}:[\w.-]+$", str(c.get("image", ""))):
            problem(f"{name}: image '{c.get('image')}' is not <registry>/<namespace>/{name}:<tag>")
        elif not re.search(r":([0-9a-f]{40}|set-a-commit-sha)$", str(c.get("image"))):
            problem(f"{name}: image '{c.get('image')}' is not tagged with a commit SHA (what deploy.yml pushes) or the placeholder set-a-commit-sha")
        spread = {t.get("topologyKey"): t for t in pod_spec.get("topologySpreadConstraints") or []}
        host = spread.get("kubernetes.io/hostname") or {}
        if not matches((host.get("labelSelector") or {}).get("matchLabels") or {}, pod_labels):
            problem(f"{name}: no topology spread over kubernetes.io/hostname selecting its own pods")
        for volume in pod_spec.get("volumes") or []:
            if "emptyDir" in volume and not (volume.get("emptyDir") or {}).get("sizeLimit"):
                problem(f"{name}: emptyDir volume '{volume.get('name')}' has no sizeLimit")
        pull_secrets = [r.get("name") for r in pod_spec.get("imagePullSecrets") or []]
        if not pull_secrets:
            problem(f"{name}: no imagePullSecrets (the registry is private)")
        for r in pull_secrets:
            if (template_secrets.get(r) or {}).get("type") != "kubernetes.io/dockerconfigjson":
                problem(f"{name}: imagePullSecret '{r}' is not a kubernetes.io/dockerconfigjson Secret of secret.template.yaml")
        pre_stop = ((c.get("lifecycle") or {}).get("preStop")) or {}
        if not (pre_stop.get("sleep") or pre_stop.get("exec")):
            problem(f"{name}: no preStop hook (a short sleep so endpoints drain before SIGTERM)")
        elif (pre_stop.get("sleep") or {}).get("seconds", 1) >= pod_spec.get("terminationGracePeriodSeconds", 30):
            problem(f"{name}: the preStop sleep uses up terminationGracePeriodSeconds")
        if not (c.get("livenessProbe") or {}).get("initialDelaySeconds"):
            problem(f"{name}: the liveness probe has no initialDelaySeconds (start-up)")
        ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        if str(env.get("PORT")) not in [str(p) for p in ports.values()]:
            problem(f"{name}: PORT env ({env.get('PORT')}) is not the container port {list(ports.values())}")
        for probe, path in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
            get = (c.get(probe) or {}).get("httpGet") or {}
            if get.get("path") != path:
                problem(f"{name}: {probe} does not GET {path}")
            if get.get("port") not in ports and get.get("port") not in ports.values():
                problem(f"{name}: {probe} port {get.get('port')} is not a container port")
        ready_timeout = (c.get("readinessProbe") or {}).get("timeoutSeconds", 1)
        if ready_timeout <= readiness_budget_seconds():
            problem(f"{name}: readinessProbe timeoutSeconds {ready_timeout} does not exceed /readyz's own budget ({readiness_budget_seconds()} s)")
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            if not {"cpu", "memory"} <= set((res.get(kind) or {}).keys()):
                problem(f"{name}: resources.{kind} needs cpu and memory")
        csc = c.get("securityContext", {})
        if not (psc.get("runAsNonRoot") or csc.get("runAsNonRoot")):
            problem(f"{name}: runAsNonRoot is not set")
        if (csc.get("runAsUser", psc.get("runAsUser")) or 0) == 0:
            problem(f"{name}: runs as user 0")
        if csc.get("allowPrivilegeEscalation") is not False:
            problem(f"{name}: allowPrivilegeEscalation is not false")
        cm_refs = [e["configMapRef"]["name"] for e in c.get("envFrom", []) if "configMapRef" in e]
        secret_refs = [e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e]
        if not cm_refs or any(r not in configmaps for r in cm_refs):
            problem(f"{name}: envFrom ConfigMap {cm_refs} is not rendered by the kustomization")
        if has_database(name):
            if f"{name}-db" not in secret_refs:
                problem(f"{name}: envFrom lacks its Secret {name}-db")
        else:
            if any(r.endswith("-db") for r in secret_refs) or "DATABASE_URL" in env:
                problem(f"{name}: has no database (deploy/services.txt) but gets one: {secret_refs}")
        services = by_kind.get("Service", {})
        for var in sorted(url_variables(name) | {v for v in env if v.endswith("_SERVICE_URL")}):
            target = url_target(var)
            m = re.match(r"http://([a-z0-9-]+)(?::(\d+))?$", str(env.get(var)))
            target_ports = [p.get("port") for p in (services.get(target) or {}).get("spec", {}).get("ports", [])]
            if not m or m.group(1) != target or target not in services:
                problem(f"{name}: {var} is '{env.get(var)}', not http://<the Service {target}>")
            elif int(m.group(2) or 80) not in target_ports:
                problem(f"{name}: {var} uses port {m.group(2) or 80}; the Service {target} has {target_ports}")
        for r in secret_refs:
            if r not in template_secrets:
                problem(f"{name}: envFrom Secret '{r}' is not described in secret.template.yaml")
        # API keys are required: a secretKeyRef that is not optional, to a Secret of the template
        # that holds that key, and no Secret that might hold API_KEYS is optional.
        key_refs = {e["name"]: ((e.get("valueFrom") or {}).get("secretKeyRef") or {}) for e in c.get("env", [])}
        for var in ["API_KEYS"] + (["CONSOLE_API_KEY"] if name == "console" else []):
            ref = key_refs.get(var) or {}
            held = ((template_secrets.get(ref.get("name")) or {}).get("stringData") or {})
            if not ref or ref.get("optional") or ref.get("key") != var or var not in held:
                problem(f"{name}: {var} is not a required secretKeyRef to a Secret of secret.template.yaml holding {var}")
        for e in c.get("envFrom", []):
            ref = e.get("secretRef") or {}
            held = ((template_secrets.get(ref.get("name")) or {}).get("stringData") or {})
            if ref.get("optional") and ({"API_KEYS", "API_KEYS_FILE", "CONSOLE_API_KEY"} & set(held)):
                problem(f"{name}: the optional Secret {ref.get('name')} holds API keys")
        if env.get("ALLOW_ANONYMOUS") is not None:
            problem(f"{name}: ALLOW_ANONYMOUS is set; a cluster deployment needs keys")
        svc = by_kind.get("Service", {}).get(name)
        if not svc:
            problem(f"{name}: no Service")
        else:
            if not matches(svc["spec"].get("selector", {}), pod_labels):
                problem(f"{name}: Service selector does not select the Deployment's pods")
            for p in svc["spec"].get("ports", []):
                if p.get("targetPort") not in ports and p.get("targetPort") not in ports.values():
                    problem(f"{name}: Service targetPort {p.get('targetPort')} is not a container port")
        pdb = by_kind.get("PodDisruptionBudget", {}).get(name)
        if not pdb:
            problem(f"{name}: no PodDisruptionBudget")
        else:
            if not matches(pdb["spec"].get("selector", {}).get("matchLabels", {}), pod_labels):
                problem(f"{name}: PodDisruptionBudget selector does not select the Deployment's pods")
            if "minAvailable" not in pdb["spec"] and "maxUnavailable" not in pdb["spec"]:
                problem(f"{name}: PodDisruptionBudget sets neither minAvailable nor maxUnavailable")


# ------------------------------------------------------------------------------------- dockerfiles
def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in path.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        word, _, rest = current.strip().partition(" ")
        out.append((word.upper(), " ".join(rest.split())))
        current = ""
    return out


def check_dockerfiles(build_command: str) -> None:
    ports = services_ports()
    files = [ROOT / "deploy/docker/Dockerfile"] + [ROOT / f"deploy/docker/Dockerfile.{s}" for s in ports]
    for f in files:
        rel = f.relative_to(ROOT)
        if not f.exists():
            problem(f"{rel}: missing")
            continue
        ins = dockerfile_instructions(f)
        directives = [i for i, line in enumerate(f.read_text().splitlines()) if re.match(r"#\s*syntax=", line)]
        if directives and directives != [0]:
            problem(f"{rel}: the '# syntax=' parser directive is not the first line, so it is ignored")
        runs = [re.sub(r"^(--\S+\s+)+", "", args) for word, args in ins if word == "RUN"]  # minus --mount=…
        builds = [seg.strip() for r in runs for seg in re.split(r"&&|;|\|\|", r) if seg.strip().startswith("cargo build")]
        if not builds:
            problem(f"{rel}: no cargo build command")
        for b in builds:
            if b != build_command:
                problem(f"{rel}: builds with `{b}`, the test suite with `{build_command}`")
        froms = [args for word, args in ins if word == "FROM"]
        if len(froms) < 2:
            problem(f"{rel}: not a multi-stage build")
        if not any(word == "RUN" and "cargo chef cook" in args and "--locked" in args for word, args in ins):
            problem(f"{rel}: no dependency-only layer (cargo chef cook --locked)")
        final = ins[max(i for i, (w, _) in enumerate(ins) if w == "FROM"):]
        users = [a for w, a in final if w == "USER"]
        if not users or users[-1].split(":")[0] in ("0", "root"):
            problem(f"{rel}: the runtime stage does not switch to a non-root USER")
        for word in ("EXPOSE", "HEALTHCHECK", "ENTRYPOINT"):
            if not any(w == word for w, _ in final):
                problem(f"{rel}: the runtime stage has no {word}")
        args = {a.split("=")[0]: a.partition("=")[2] for w, a in ins if w == "ARG"}
        m = re.match(r"Dockerfile\.(.+)", f.name)
        if m:
            service = m.group(1)
            first_args = [a for w, a in ins[: [w for w, _ in ins].index("FROM")] if w == "ARG"]
            if f"SERVICE={service}" not in first_args or f"PORT={ports[service]}" not in first_args:
                problem(f"{rel}: SERVICE/PORT defaults are not {service}/{ports[service]}")
        elif args.get("SERVICE") or args.get("PORT"):
            problem(f"{rel}: the shared Dockerfile must not default SERVICE/PORT")
    gen = subprocess.run(["bash", str(ROOT / "deploy/docker/generate.sh"), "--check"], capture_output=True, text=True)
    if gen.returncode != 0:
        problem("deploy/docker/Dockerfile.<service> are not what generate.sh makes: " + gen.stderr.strip())


# ------------------------------------------------------------------------------------ dockerignore
def ignore_regex(pattern: str) -> re.Pattern:
    pattern = pattern.strip("/")
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + "$")


def in_context(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for negate, rx in rules:
        if any(rx.match(p) for p in prefixes):
            included = negate
    return included


def check_dockerignore() -> None:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), ignore_regex(line.lstrip("!"))))
    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text())
    members = manifest.get("workspace", {}).get("members", [])
    tracked = subprocess.run(["git", "ls-files", *members], cwd=ROOT, capture_output=True, text=True).stdout.split()
    needed = ["Cargo.toml", "Cargo.lock", ".cargo/config.toml", *tracked]
    for word, args in dockerfile_instructions(ROOT / "deploy/docker/Dockerfile"):
        if word == "COPY" and "--from" not in args:
            needed += [s for s in args.split()[:-1] if s not in (".", "./")]
    for path in needed:
        if (ROOT / path).exists() and not in_context(path, rules):
            problem(f".dockerignore keeps {path} out of the build context")
    for member in members:
        if not any(in_context(p, rules) for p in tracked if p.startswith(member + "/")):
            problem(f".dockerignore keeps workspace member {member} out of the build context")
    for path in (".git/HEAD", "target/release/x", "crates/platform/target/debug/x", "data/customer.db"):
        if in_context(path, rules):
            problem(f".dockerignore lets {path} into the build context")


# ------------------------------------------------------------------------------------------ topics
def check_topics() -> None:
    src = (ROOT / "crates/contracts/src/topics.rs").read_text()
    consts = dict(re.findall(r'pub const (\w+): &str = "([^"]+)";', src))
    m = re.search(r"pub const ALL: \[&str; \d+\] = \[([^\]]*)\]", src)
    if not m:
        problem("crates/contracts/src/topics.rs: no `pub const ALL: [&str; N]` list found")
        return
    contract = {consts.get(n.strip(), n.strip()) for n in m.group(1).split(",") if n.strip()}
    suffix = consts.get("DEAD_LETTER_SUFFIX")
    if suffix != ".DLT":
        problem(f"contracts' dead-letter suffix is {suffix!r}; deploy scripts create <topic>.DLT")
    contract |= {f"{t}{suffix}" for t in contract}
    listed = {t.split()[0] for t in (ROOT / "deploy/topics.txt").read_text().splitlines() if t.strip() and not t.startswith("#")}
    if listed != contract:
        problem(f"deploy/topics.txt {sorted(listed)} differs from contracts' topics {sorted(contract)}")


def readiness_budget_seconds() -> float:
    """The longest `/readyz` waits (its database budget, `DATABASE_BUDGET` in readiness.rs)."""
    text = (ROOT / "crates/platform/src/events/readiness.rs").read_text()
    m = re.search(r"pub const DATABASE_BUDGET: Duration = Duration::from_millis\((\d+)\);", text)
    if not m:
        problem("crates/platform/src/events/readiness.rs: DATABASE_BUDGET (Duration::from_millis) not found")
        return 0.0
    return int(m.group(1)) / 1000


# --------------------------------------------------------------------------------------- workflows
USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$")


def check_pinned(name: str, text: str) -> None:
    """Every action pinned by a full commit SHA, with a comment naming its version."""
    for number, line in enumerate(text.splitlines(), 1):
        m = USES.match(line)
        if not m or m.group(1).startswith("./"):
            continue
        ref = m.group(1).partition("@")[2]
        if not re.fullmatch(r"[0-9a-f]{40}", ref):
            problem(f"{name}:{number}: `{m.group(1)}` is not pinned by a full commit SHA")
        elif not re.match(r"\s+#\s*\S", m.group(2)):
            problem(f"{name}:{number}: `{m.group(1)}` has no `# vX` comment naming its version")


# What every deploy job's condition must require: a CI run of a push (not of a pull request) to this
# repository's own main, or a dispatch by hand on main. A fork's branch named `main` matches
# `workflow_run: branches: [main]`; only these terms keep its code away from the secrets.
FORK_GUARD = (
    "github.event.workflow_run.event == 'push'",
    "github.event.workflow_run.head_repository.full_name == github.repository",
    "github.event.workflow_run.head_branch == 'main'",
    "github.event_name == 'workflow_dispatch' && github.ref == 'refs/heads/main'",
)


def check_fork_guard(job_name: str, job: dict) -> None:
    """A deploy job runs only for this repository's own pushes to main, in an environment."""
    condition = " ".join(str(job.get("if", "")).split())
    for term in FORK_GUARD:
        if term not in condition:
            problem(f"deploy.yml: job {job_name}'s `if` lacks the fork guard `{term}`")
    if condition.count("||") != 1:
        problem(f"deploy.yml: job {job_name}'s `if` has another way in besides the guarded ones: {condition}")
    if job.get("environment") != "production":
        problem(f"deploy.yml: job {job_name} does not run in the `production` environment (required reviewers)")


# A download piped into a shell runs whatever the server sends that day.
PIPED_INSTALL = re.compile(r"\b(curl|wget)\b[^\n|]*\|\s*(sudo\s+)?(ba|z|da)?sh\b")
INSTALLER = ROOT / "deploy/codeengine/install-ibmcloud-cli.sh"


def check_installers(jobs: dict) -> None:
    """No `curl | sh` in a workflow or a deploy script; the IBM Cloud CLI comes from the pinned
    installer, which checks a version's SHA-256 before it runs anything."""
    files = sorted((ROOT / ".github/workflows").glob("*.yml")) + sorted((ROOT / "deploy").rglob("*.sh"))
    for f in files:
        for number, line in enumerate(f.read_text().splitlines(), 1):
            if not line.lstrip().startswith("#") and PIPED_INSTALL.search(line):
                problem(f"{f.relative_to(ROOT)}:{number}: a download piped into a shell: {line.strip()}")
    for job_name, job in jobs.items():
        if not any("deploy/codeengine/install-ibmcloud-cli.sh" in str(s.get("run", "")) for s in job.get("steps") or []):
            problem(f"deploy.yml: job {job_name} does not install the CLI with deploy/codeengine/install-ibmcloud-cli.sh")
    text = INSTALLER.read_text() if INSTALLER.exists() else ""
    if not re.search(r"^IBMCLOUD_CLI_VERSION=\d+\.\d+\.\d+$", text, re.M):
        problem(f"{INSTALLER.relative_to(ROOT)}: no pinned IBMCLOUD_CLI_VERSION=X.Y.Z")
    if "sha256sum --check" not in text or not re.search(r"^IBMCLOUD_CLI_SHA256=", text, re.M):
        problem(f"{INSTALLER.relative_to(ROOT)}: the archive is not checked against a pinned IBMCLOUD_CLI_SHA256")


def deploy_sh_default(variable: str) -> int:
    m = re.search(rf"^{variable}=\$\{{{variable}:-(\d+)\}}$", (ROOT / "deploy/codeengine/deploy.sh").read_text(), re.M)
    return int(m.group(1)) if m else -1


# What the deploy job needs besides the applications' waits: the CLI and its plug-ins, log-in,
# topics, IAM and secrets (a handful of API calls each).
DEPLOY_OVERHEAD_SECONDS = 600


def check_rollout_budget(jobs: dict) -> None:
    """The rollout's waits fit the deploy job's timeout: every application's CE_APP_WAIT within
    CE_ROLLOUT_BUDGET, and that budget plus the overhead within timeout-minutes."""
    for job_name, job in jobs.items():
        steps = [s for s in job.get("steps") or [] if "deploy/codeengine/deploy.sh" in str(s.get("run", ""))]
        if not steps:
            continue
        env = steps[0].get("env") or {}
        wait = int(env.get("CE_APP_WAIT", deploy_sh_default("CE_APP_WAIT")))
        budget = int(env.get("CE_ROLLOUT_BUDGET", deploy_sh_default("CE_ROLLOUT_BUDGET")))
        timeout = int(job.get("timeout-minutes", 360)) * 60
        apps = len(services_ports())
        if wait <= 0 or budget <= 0:
            problem(f"deploy.yml: job {job_name}: CE_APP_WAIT and CE_ROLLOUT_BUDGET must be set (deploy.sh defaults not found)")
        if apps * wait > budget:
            problem(f"deploy.yml: job {job_name}: {apps} applications x CE_APP_WAIT={wait}s exceed CE_ROLLOUT_BUDGET={budget}s")
        if budget + DEPLOY_OVERHEAD_SECONDS > timeout:
            problem(f"deploy.yml: job {job_name}: CE_ROLLOUT_BUDGET={budget}s + {DEPLOY_OVERHEAD_SECONDS}s for the rest "
                    f"exceed timeout-minutes ({timeout}s): the job would be cut off mid-rollout")
    if "--no-wait" in (ROOT / "deploy/codeengine/deploy.sh").read_text():
        problem("deploy/codeengine/deploy.sh uses --no-wait: a rollout that is not awaited can report success")


def check_workflows(build_command: str) -> None:
    wf = ROOT / ".github/workflows"
    ci = (wf / "ci.yml").read_text() if (wf / "ci.yml").exists() else ""
    deploy = (wf / "deploy.yml").read_text() if (wf / "deploy.yml").exists() else ""
    for needle in ("cargo fmt --all -- --check", "-D warnings", "cargo xtask test", "cargo deny check\n"):
        if needle not in ci:
            problem(f"ci.yml does not run `{needle.strip()}`")
    ci_run = (ROOT / ".ci/run").read_text()
    if "cargo deny check licenses bans sources" not in ci_run:
        problem(".ci/run does not run `cargo deny check licenses bans sources`")
    ci_doc = load_yaml(wf / "ci.yml") or {}
    on = ci_doc.get(True, ci_doc.get("on")) or {}
    if not {"push", "pull_request"} <= set(on):
        problem("ci.yml does not run on push and pull_request")
    for f in sorted(wf.glob("*.yml")):
        check_pinned(f.name, f.read_text())

    d = load_yaml(wf / "deploy.yml") or {}
    d_on = d.get(True, d.get("on")) or {}
    # Only after CI passed: triggered by the CI workflow's completion, and every job that does not
    # wait for another one checks that CI succeeded.
    if "push" in d_on:
        problem("deploy.yml runs on push, before CI has passed (use workflow_run on the CI workflow)")
    run = d_on.get("workflow_run") or {}
    if run.get("workflows") != [ci_doc.get("name")] or run.get("types") != ["completed"] or run.get("branches") != ["main"]:
        problem(f"deploy.yml: not `workflow_run: {{workflows: [{ci_doc.get('name')}], types: [completed], branches: [main]}}`: {run}")
    jobs = d.get("jobs") or {}
    for job_name, job in jobs.items():
        if not job.get("needs") and "github.event.workflow_run.conclusion == 'success'" not in str(job.get("if", "")):
            problem(f"deploy.yml: job {job_name} does not check that CI succeeded (github.event.workflow_run.conclusion == 'success')")
        check_fork_guard(job_name, job)
    env = d.get("env") or {}
    if "github.event.workflow_run.head_sha" not in str(env.get("IMAGE_TAG", "")):
        problem("deploy.yml: IMAGE_TAG is not the commit CI tested (github.event.workflow_run.head_sha)")
    if not d.get("concurrency"):
        problem("deploy.yml has no concurrency group")
    if d.get("permissions") != {"contents": "read"}:
        problem("deploy.yml permissions are not minimal (contents: read)")
    for needle in ("deploy/codeengine/deploy.sh", "ibmcloud cr login", "secrets.IBM_CLOUD_API_KEY"):
        if needle not in deploy:
            problem(f"deploy.yml does not use `{needle}`")
    check_installers(jobs)
    check_rollout_budget(jobs)
    builds: dict[str, list[str]] = {}
    for job_name, job in jobs.items():
        steps = job.get("steps") or []
        for step in steps:
            if str(step.get("uses", "")).startswith("actions/checkout@") and (step.get("with") or {}).get("ref") != "${{ env.IMAGE_TAG }}":
                problem(f"deploy.yml: job {job_name} checks out another commit than IMAGE_TAG")
            with_ = step.get("with") or {}
            m = re.fullmatch(r"deploy/docker/Dockerfile\.(.+)", str(with_.get("file", "")))
            if m:
                builds.setdefault(m.group(1), []).append(job_name)
                if not str(with_.get("tags", "")).endswith(f"/{m.group(1)}:${{{{ env.IMAGE_TAG }}}}"):
                    problem(f"deploy.yml: {m.group(1)} is not tagged <registry>/<namespace>/{m.group(1)}:${{{{ env.IMAGE_TAG }}}}")
        if builds and "matrix" in str(job.get("strategy", "")):
            problem(f"deploy.yml: job {job_name} builds images in a matrix (one compile per runner)")
    for service in services_ports():
        if len(builds.get(service, [])) != 1:
            problem(f"deploy.yml: {service} is built {len(builds.get(service, []))} times, not once")
    if len({j for js in builds.values() for j in js}) > 1:
        problem("deploy.yml: the images are built in several jobs; one job shares one compile")


# -------------------------------------------------------------------------------------- monitoring
MONITORING = ROOT / "deploy/monitoring"
# Series Prometheus makes itself, not the services.
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE"}
PROMQL_WORDS = {"and", "or", "unless", "offset", "bool"}


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (histogram series as their histogram's name)."""
    expr = re.sub(r'"[^"]*"', " ", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for m in re.finditer(r"(?<![\w$.])[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        if m.group(0) not in PROMQL_WORDS and not expr[m.end():].lstrip().startswith("("):
            names.add(re.sub(r"_bucket$", "", m.group(0)))
    return names


def known_metrics() -> set[str]:
    """Metric names the code emits (string literals in the metrics macros) or docs/operations.md names."""
    known = set(PROMETHEUS_SERIES)
    for f in [*(ROOT / "crates").rglob("*.rs"), *(ROOT / "services").rglob("*.rs")]:
        known |= set(re.findall(r'(?:counter|gauge|histogram)!\(\s*"([a-z_]+)"', f.read_text()))
    ops = ROOT / "docs/operations.md"
    if ops.exists():
        known |= set(re.findall(r"`([a-z][a-z0-9_]+)(?:\{[^`]*\})?`", ops.read_text()))
    return known


def check_monitoring(dashboard_rules: Path) -> None:
    ports = services_ports()
    prom = load_yaml(MONITORING / "prometheus.yml") or {}
    jobs = {}
    for sc in prom.get("scrape_configs") or []:
        targets = [t for s in sc.get("static_configs") or [] for t in s.get("targets") or []]
        jobs[sc.get("job_name")] = targets
    for name, port in ports.items():
        if jobs.get(name) != [f"{name}:{port}"]:
            problem(f"prometheus.yml: job {name} does not scrape {name}:{port} (the compose service): {jobs.get(name)}")
    for job in set(jobs) - set(ports):
        problem(f"prometheus.yml: job {job} is not a service of deploy/services.txt")
    if "alerts.yml" not in (prom.get("rule_files") or []):
        problem("prometheus.yml: does not load alerts.yml")

    known = known_metrics()
    rules = load_yaml(MONITORING / "alerts.yml") or {}
    alerts = {}
    for group in rules.get("groups") or []:
        for rule in group.get("rules") or []:
            if "alert" in rule:
                alerts[rule["alert"]] = rule
    ops = ROOT / "docs/operations.md"
    anchors = {github_anchor(h) for h in re.findall(r"^#+ (.+)$", ops.read_text(), re.M)} if ops.exists() else set()
    for name, rule in alerts.items():
        labels, notes = rule.get("labels") or {}, rule.get("annotations") or {}
        if labels.get("severity") not in ("warning", "critical"):
            problem(f"alerts.yml: {name} has no severity warning|critical")
        for key in ("summary", "description", "runbook_url"):
            if not notes.get(key):
                problem(f"alerts.yml: {name} has no {key} annotation")
        if notes.get("runbook_url") != f"docs/operations.md#{name.lower()}":
            problem(f"alerts.yml: {name}: runbook_url is not docs/operations.md#{name.lower()}")
        elif name.lower() not in anchors:
            problem(f"alerts.yml: {name}: docs/operations.md has no section '{name}' (its runbook)")
        for metric in sorted(metric_names(rule.get("expr", "")) - known):
            problem(f"alerts.yml: {name} uses {metric}, which no service emits and docs/operations.md does not name")

    tests = load_yaml(MONITORING / "alerts_test.yml") or {}
    if "alerts.yml" not in (tests.get("rule_files") or []):
        problem("alerts_test.yml: does not test alerts.yml")
    fired, quiet = set(), set()
    for test in tests.get("tests") or []:
        for case in test.get("alert_rule_test") or []:
            (fired if case.get("exp_alerts") else quiet).add(case.get("alertname"))
    for name in alerts:
        if name not in fired:
            problem(f"alerts_test.yml: no test where {name} fires")
        if name not in quiet:
            problem(f"alerts_test.yml: no test where {name} stays silent")

    try:
        dash = json.loads((MONITORING / "grafana/dashboard.json").read_text())
    except (OSError, ValueError) as e:
        problem(f"grafana/dashboard.json: not valid JSON: {e}")
        return
    variables = {v.get("name"): v for v in (dash.get("templating") or {}).get("list") or []}
    if (variables.get("datasource") or {}).get("query") != "prometheus":
        problem("grafana/dashboard.json: no `datasource` variable of type prometheus")
    ids, records = set(), []
    for panel in dash.get("panels") or []:
        title = panel.get("title")
        if panel.get("id") in ids:
            problem(f"grafana/dashboard.json: panel id {panel.get('id')} used twice")
        ids.add(panel.get("id"))
        pos = panel.get("gridPos") or {}
        if not all(isinstance(pos.get(k), int) for k in "hwxy") or pos["x"] + pos["w"] > 24:
            problem(f"grafana/dashboard.json: panel '{title}' has no valid gridPos")
        if panel.get("type") == "row":
            continue
        if (panel.get("datasource") or {}).get("uid") != "${datasource}":
            problem(f"grafana/dashboard.json: panel '{title}' does not use the $datasource variable")
        if not panel.get("targets"):
            problem(f"grafana/dashboard.json: panel '{title}' has no query")
        for target in panel.get("targets") or []:
            expr = target.get("expr", "")
            for metric in sorted(metric_names(expr) - known):
                problem(f"grafana/dashboard.json: panel '{title}' uses {metric}, which no service emits and docs/operations.md does not name")
            concrete = expr.replace("$__rate_interval", "1m").replace("$job", ".+")
            records.append({"record": f"dashboard:panel_{panel.get('id')}_{target.get('refId')}", "expr": concrete})
    dashboard_rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))

    provisioning = MONITORING / "grafana/provisioning"
    sources = load_yaml(provisioning / "datasources/prometheus.yml") or {}
    if not any(d.get("uid") == "prometheus" and d.get("url") == "http://prometheus:9090" for d in sources.get("datasources") or []):
        problem("grafana provisioning: no data source uid prometheus at http://prometheus:9090")
    providers = load_yaml(provisioning / "dashboards/event-microservices.yml") or {}
    paths = {(p.get("options") or {}).get("path") for p in providers.get("providers") or []}

    compose = (load_yaml(ROOT / "docker-compose.yml") or {}).get("services") or {}
    for name, image in (("prometheus", "prom/prometheus:"), ("grafana", "grafana/grafana:")):
        svc = compose.get(name) or {}
        if not str(svc.get("image", "")).startswith(image):
            problem(f"docker-compose.yml: no {name} service with image {image}<version>")
        if svc.get("profiles") != ["monitoring"]:
            problem(f"docker-compose.yml: {name} is not (only) in the profile monitoring")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in (compose.get("prometheus") or {}).get("volumes") or []}
    if mounts.get("/etc/prometheus") != "./deploy/monitoring":
        problem("docker-compose.yml: prometheus does not mount ./deploy/monitoring at /etc/prometheus")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in (compose.get("grafana") or {}).get("volumes") or []}
    if mounts.get("/etc/grafana/provisioning") != "./deploy/monitoring/grafana/provisioning":
        problem("docker-compose.yml: grafana does not mount the provisioning at /etc/grafana/provisioning")
    if not any(dst.startswith(f"{p}/") and src == "./deploy/monitoring/grafana/dashboard.json" for dst, src in mounts.items() for p in paths):
        problem("docker-compose.yml: grafana does not mount dashboard.json under the provider's path")


# -------------------------------------------------------------------------------------- k8s-api-keys
def check_k8s_api_keys() -> None:
    import hashlib
    done = subprocess.run(["bash", str(ROOT / "deploy/k8s/api-keys.sh")], capture_output=True, text=True)
    if done.returncode != 0:
        problem(f"api-keys.sh failed: {done.stderr.strip()}")
        return
    shown = re.findall(r"^  (\S+)$", done.stderr, re.M)
    if len(shown) != 1 or len(shown[0]) < 24:
        problem(f"api-keys.sh: not one key of at least 24 characters on stderr: {done.stderr!r}")
        return
    ops = shown[0]
    if ops in done.stdout:
        problem("api-keys.sh: the operator's key is in the manifest")
    secret = yaml.safe_load(done.stdout) or {}
    templates = [d for d in yaml.safe_load_all((ROOT / "deploy/k8s/secret.template.yaml").read_text()) if d]
    template = next((d for d in templates if d["metadata"]["name"] == "ems-api-keys"), {})
    if secret.get("kind") != "Secret" or secret.get("metadata") != template.get("metadata"):
        problem(f"api-keys.sh: not the Secret ems-api-keys of the template: {secret.get('metadata')}")
    data = secret.get("stringData") or {}
    if set(data) != set(template.get("stringData") or {}):
        problem(f"api-keys.sh: the Secret holds {sorted(data)}, the template {sorted(template.get('stringData') or {})}")
    digest = lambda key: hashlib.sha256(key.encode()).hexdigest()
    every = "customers:read+customers:write+transactions:read+transactions:write+notifications:read+console:read"
    reads = "customers:read+transactions:read+notifications:read"
    console = str(data.get("CONSOLE_API_KEY", ""))
    expected = f"ops:{every}:sha256:{digest(ops)},console:{reads}:sha256:{digest(console)}"
    if data.get("API_KEYS") != expected or len(console) < 24:
        problem(f"api-keys.sh: API_KEYS is {data.get('API_KEYS')!r}, expected {expected!r}")
    scopes = re.findall(r"([a-z]+:(?:read|write))", (ROOT / "crates/platform/src/guard/auth/scope.rs").read_text().split("pub const KNOWN")[1].split(";")[0])
    if sorted(scopes) != sorted(every.split("+")):
        problem(f"api-keys.sh: the scopes {every} are not those of crates/platform/src/guard/auth/scope.rs ({scopes})")


def main() -> int:
    cmd, args = sys.argv[1], sys.argv[2:]
    {
        "compose": check_compose,
        "k8s": lambda: check_k8s(Path(args[0])),
        "k8s-api-keys": check_k8s_api_keys,
        "dockerfiles": lambda: check_dockerfiles(args[0]),
        "dockerignore": check_dockerignore,
        "topics": check_topics,
        "workflows": lambda: check_workflows(args[0] if args else ""),
        "monitoring": lambda: check_monitoring(Path(args[0])),
    }[cmd]()
    for p in problems:
        print(f"    {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
