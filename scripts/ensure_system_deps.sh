#!/usr/bin/env bash
# Installs the Debian packages that the test suite and the benchmarks drive for real:
#   chromium + chromium-driver  the browser test of the HTML reports (Selenium, headless)
#   postgresql                  the registry's tests on a real PostgreSQL server (a throwaway
#                               cluster started by the tests themselves on a loopback port)
#   wrk                         the service benchmark's load generator
#   nats-server                 telemetry through NATS JetStream (a throwaway server with JetStream,
#                               its store in a temporary directory, started by the tests on a loopback port)
#   redis-server                the shared cap and rate-limit stores' tests on a real Redis (a throwaway
#                               server started by the tests themselves on a loopback port, no persistence)
#   nodejs                      the JavaScript client runtime's tests and benchmark (clients/js: node --test)
#   openjdk-17-jre-headless     the Java runtime of PySpark: `closedloop dataset build --engine spark` and its
#                               parity test (a local[2] session on the loopback address)
# Idempotent and quick when everything is present; needs root (or sudo) only when something is
# missing. Called by `make test` and `make bench`.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    missing+=(postgresql)
fi

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

echo "closedloop: installing Debian packages: ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "closedloop: cannot install ${missing[*]}: not root and no sudo. Install them with apt-get." >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
