#!/usr/bin/env bash
# Container health check with no curl in the image: GET <path> (default /healthz) on the service's
# own PORT through bash's /dev/tcp; healthy when the status is 2xx.
#   healthcheck [PATH]        environment: PORT (set by the image), HEALTHCHECK_HOST (127.0.0.1)
set -euo pipefail
path=${1:-/healthz}
host=${HEALTHCHECK_HOST:-127.0.0.1}
port=${PORT:?PORT is not set}

exec 3<>"/dev/tcp/${host}/${port}"
printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$host" >&3
read -r -t 5 _version status _reason <&3 || { echo "no answer from ${host}:${port}${path}" >&2; exit 1; }
if [[ $status =~ ^2[0-9][0-9]$ ]]; then
  exit 0
fi
echo "${host}:${port}${path} answered ${status}" >&2
exit 1
