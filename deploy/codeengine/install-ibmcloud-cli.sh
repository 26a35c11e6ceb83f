#!/usr/bin/env bash
# Installs the IBM Cloud CLI (`ibmcloud`) at a pinned version, checked against its SHA-256 before
# anything in it runs: no `curl ... | sh` of an installer that fetches whatever is newest.
# Used by .github/workflows/deploy.yml; works on any linux/amd64 machine with curl and sha256sum.
#   deploy/codeengine/install-ibmcloud-cli.sh [DEST]   DEST: where `ibmcloud` goes (default /usr/local/bin)
#
# To move to another version: take the archive's SHA-256 from IBM's release page
# (github.com/IBM-Cloud/ibm-cloud-cli-release/releases, the checksums of each release), or from IBM's
# metadata https://download.clis.cloud.ibm.com/ibm-cloud-cli-metadata-dn/all_versions.json (the
# entry of the version, `binaries.linux64.sha256_checksum`), or compute it on a trusted machine (`sha256sum IBM_Cloud_CLI_<version>_linux_amd64.tgz`), and change both lines
# below in one reviewed commit.
set -euo pipefail

IBMCLOUD_CLI_VERSION=2.32.0
# SHA-256 of IBM_Cloud_CLI_${IBMCLOUD_CLI_VERSION}_linux_amd64.tgz. Left empty on purpose until
# someone reads it from IBM's release page: no machine of this repository can reach IBM's download
# site, and a guessed value would only look verified. Empty, the script refuses to install.
IBMCLOUD_CLI_SHA256=

dest=${1:-/usr/local/bin}
archive="IBM_Cloud_CLI_${IBMCLOUD_CLI_VERSION}_linux_amd64.tgz"
url="https://download.clis.cloud.ibm.com/ibm-cloud-cli/${IBMCLOUD_CLI_VERSION}/binaries/${archive}"

[[ $IBMCLOUD_CLI_SHA256 =~ ^[0-9a-f]{64}$ ]] || {
  echo "install-ibmcloud-cli.sh: no SHA-256 pinned for IBM Cloud CLI $IBMCLOUD_CLI_VERSION: set IBMCLOUD_CLI_SHA256 in $0 from IBM's release page" >&2
  exit 1
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
curl -fsSL --proto '=https' --tlsv1.2 -o "$work/$archive" "$url"
echo "$IBMCLOUD_CLI_SHA256  $work/$archive" | sha256sum --check --strict --quiet ||
  { echo "install-ibmcloud-cli.sh: $archive does not match the pinned SHA-256: not installed" >&2; exit 1; }
tar -xzf "$work/$archive" -C "$work"
install -m 0755 "$work/IBM_Cloud_CLI/ibmcloud" "$dest/ibmcloud" 2>/dev/null ||
  sudo install -m 0755 "$work/IBM_Cloud_CLI/ibmcloud" "$dest/ibmcloud"
"$dest/ibmcloud" version
