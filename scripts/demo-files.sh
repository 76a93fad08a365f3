#!/usr/bin/env bash
# The main job on the embedded default: install, create a local repository in a throwaway
# directory, back up a directory, change it, back up again, restore, verify, check, clean up.
# (The README's first command runs the PostgreSQL demo, scripts/demo.sh.)
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "Installing and building holdfast"
npm ci --no-audit --no-fund --loglevel=error
npm run --silent build

work=$(mktemp -d /tmp/holdfast-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
hf() { HOLDFAST_CONFIG=/dev/null node bin/holdfast.cjs "$@"; }
export HOLDFAST_REPO="$work/repo" HOLDFAST_PASSWORD="demo password, not for production"

say "Creating sample data in $work/data (the project's own sources, a 64 MiB file, a symlink)"
mkdir -p "$work/data"
cp -r src docs "$work/data/"
head -c $((64 << 20)) /dev/urandom > "$work/data/big.bin"
ln -s docs/design.md "$work/data/design-link.md"

say "holdfast init"
hf init
say "holdfast backup $work/data"
hf backup "$work/data" --tag demo
say "Changing one file and backing up again (unchanged files are not read again)"
echo "changed at $(date)" >> "$work/data/docs/design.md"
hf backup "$work/data" --tag demo
say "holdfast snapshots"
hf snapshots
say "holdfast diff (first vs latest)"
first=$(hf snapshots --json | node -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(0,"utf8"))[0].id)')
hf diff "$first" latest
say "holdfast restore latest --target $work/restore"
hf restore latest --target "$work/restore"
say "Verifying the restored tree is identical"
diff -r --no-dereference "$work/data" "$work/restore$work/data" && echo "restored data is byte-identical"
say "holdfast check --read-data"
hf check --read-data
say "holdfast stats"
hf stats
say "Done; removing $work"
