#!/usr/bin/env bash
# Makes the API keys of the Kubernetes deployment (the Secret ems-api-keys, which every Deployment
# requires): prints the Secret's manifest on stdout and the operator's key, once, on stderr.
#   deploy/k8s/api-keys.sh | kubectl apply -f -
# API_KEYS holds only SHA-256 digests: a key "ops" with every scope, and "console" with the reads the
# console needs of the services; CONSOLE_API_KEY is the console's own key (it must present it).
# Scopes, rotation: SECURITY.md. NAMESPACE (event-microservices) chooses the namespace.
set -euo pipefail

namespace=${NAMESPACE:-event-microservices}
every=customers:read+customers:write+transactions:read+transactions:write+notifications:read+console:read
reads=customers:read+transactions:read+notifications:read

new_key() { # 32 random bytes, URL-safe base64 (43 characters)
  head -c 32 /dev/urandom | base64 | tr -d '\n=' | tr '+/' '-_'
}
digest() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

ops=$(new_key)
console=$(new_key)
cat <<MANIFEST
apiVersion: v1
kind: Secret
metadata:
  name: ems-api-keys
  namespace: $namespace
type: Opaque
stringData:
  API_KEYS: "ops:$every:sha256:$(digest "$ops"),console:$reads:sha256:$(digest "$console")"
  CONSOLE_API_KEY: "$console"
MANIFEST
printf 'api-keys.sh: the key "ops" (every scope), shown this once and stored only as its digest:\n  %s\n' "$ops" >&2
