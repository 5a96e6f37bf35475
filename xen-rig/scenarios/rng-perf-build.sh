#!/bin/sh
# Host-side build step of the "rng-perf" scenario: its C device model (rng-cdm) is built with perf's
# programs by perf-build.sh.
exec sh "$(dirname "$0")/perf-build.sh"
