#!/usr/bin/env bash
# Installs what the test suites need on Debian 12 (bookworm), then the npm packages if they are not
# installed yet. Idempotent: what is there already is left alone, so a second run takes a second.
# Needs root only while a Debian package is missing. README's test command:
#   test/services/setup.sh && npm test
# The suites never skip for a missing package or service: they fail, naming this script.
set -euo pipefail
cd "$(dirname "$0")/../.."

packages=(
  # Real DICOM written by others, and pydicom as an independent referee (test/support/pydicom.ts,
  # generate, transcode, dicom-scanner); gdcm and PIL decode what pydicom cannot alone.
  python3-pydicom python3-numpy python3-gdcm python3-pil
  # DIMSE peers and tools (storescu, echoscu, findscu, ...).
  dcmtk
  # Orthanc with DICOMweb and GDCM, as a peer; tests start their own instances.
  orthanc orthanc-dicomweb orthanc-gdcm
  # A syslog server for the audit log's syslog output; tests start their own. Its TLS listener
  # (RFC 5425, the IHE ATNA transport) needs the GnuTLS network stream driver.
  rsyslog rsyslog-gnutls
  # A headless browser for the viewer pages.
  chromium
  # Self-signed certificates for the HTTPS tests.
  openssl
  # The S3 server (test/services/s3-swift/start.sh): OpenStack Swift with s3api, memcached, and
  # curl for its health check.
  swift swift-proxy swift-object swift-container swift-account python3-swift memcached curl
)
# Debian's own Node and npm, unless some npm is there already (npm brings the project's Node).
command -v npm >/dev/null || packages+=(nodejs npm)

# Daemons the tests start themselves, on their own ports and data, not as system services: the
# packages' maintainer scripts must not start them (a policy-rc.d pattern, matching both init
# script names and systemd unit names).
test_owned='orthanc*|memcached*|swift*|rsyslog*'

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if ((${#missing[@]} > 0)); then
  if [ "$(id -u)" != 0 ]; then
    echo "test/services/setup.sh: run as root to install ${missing[*]}" >&2
    exit 1
  fi
  echo "== apt-get install ${missing[*]}"
  # Keep the packages' maintainer scripts from starting the daemons the tests run themselves
  # (Debian's policy-rc.d interface: exit 101 = "not allowed"). An existing policy is respected.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\ncase "$1" in %s) exit 101 ;; esac\nexit 0\n' "$test_owned" >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Nor at boot, the two that would hold ports the tests use (Swift's system units have no
  # configuration to start with; rsyslog is the system's logger and stays enabled).
  if command -v systemctl >/dev/null; then
    for p in "${missing[@]}"; do
      case "$p" in orthanc | memcached) systemctl disable "$p" >/dev/null 2>&1 || true ;; esac
    done
  fi
fi

# Orthanc must never run as a system service, even one installed before this script ran.
if [ -d /run/systemd/system ] && systemctl is-active --quiet orthanc 2>/dev/null; then
  systemctl disable --now orthanc
elif [ -x /etc/init.d/orthanc ] && /etc/init.d/orthanc status >/dev/null 2>&1; then
  /etc/init.d/orthanc stop
fi

# The npm packages, unless installed from this lockfile already (`npm ci` brings the pinned Node).
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "== npm ci"
  npm ci --no-audit --no-fund
fi
