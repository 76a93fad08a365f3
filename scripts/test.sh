#!/usr/bin/env bash
# Install what the tests need and run every test. This is the README's second quick-start command
# and what .ci/run calls. Needs only Node 20+, npm and the base tools.
set -euo pipefail
cd "$(dirname "$0")/.."
npm ci --no-audit --no-fund --loglevel=error
npm run --silent build
./scripts/pg-deps.sh  # PostgreSQL 15 for the real-server tests (src/testing/pg.ts); quiet when present
./scripts/fuse-deps.sh  # python3-fusepy for the FUSE fault-injection tests (src/testing/faultfs.ts); quiet when present, never fatal without FUSE
./scripts/sftp-deps.sh  # openssh-server for the SFTP driver tests (src/testing/sshd.ts runs a private sshd); quiet when present
./scripts/s3-deps.sh  # moto_server for the S3 driver tests (src/testing/moto.ts runs it on loopback); quiet when present, never fatal without it
./scripts/patroni-deps.sh  # Patroni 3.0 and etcd 3.4 for the Patroni tests (src/testing/patroni.ts runs them on loopback); quiet when present, never fatal without them
# Tests run from the type-checked build; CLI tests spawn the bundled dist/.
exec node --test --test-concurrency=2 build/
