#!/usr/bin/env bash
# Install the npm packages the tests use (openai client, gpt-tokenizer's o200k ranks) into
# tests/node_modules, once. Quiet when present.
set -euo pipefail
cd "$(dirname "$0")"
[ -f package.json ] || exit 0
[ -d node_modules ] && [ node_modules -nt package.json ] && exit 0
npm install --no-audit --no-fund --silent >/dev/null
touch node_modules
