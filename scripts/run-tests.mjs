#!/usr/bin/env node
// Runs every compiled test file (dist/test/**/*.test.js) with node's own test runner.
// Arguments are substrings that select test files, e.g. `node scripts/run-tests.mjs repository`.
// The runner's summary (tests, pass, fail, ...) is the last thing printed, and its exit code is ours.
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = new URL('..', import.meta.url).pathname;
const testRoot = join(root, 'dist', 'test');

function collect(dir, out) {
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) collect(path, out);
    else if (name.endsWith('.test.js')) out.push(path);
  }
  return out;
}

const filters = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const passThrough = process.argv.slice(2).filter((a) => a.startsWith('--'));
let files;
try {
  files = collect(testRoot, []);
} catch {
  console.error(`no compiled tests under ${testRoot}: run "npm run build" first`);
  process.exit(1);
}
if (filters.length > 0) files = files.filter((f) => filters.some((s) => relative(testRoot, f).includes(s)));
if (files.length === 0) {
  console.error(`no test files match ${filters.join(', ')}`);
  process.exit(1);
}
const concurrency = process.env.VBPROXY_TEST_CONCURRENCY ?? '2';
// A test file that hangs, or whose process stays alive after its tests (a handle left open), must
// fail the run rather than stall it: each file gets at most 10 minutes (the longest takes about a
// minute), and a file's process exits once its tests are done.
const guards = ['--test-timeout=600000', '--test-force-exit'];
const result = spawnSync(
  process.execPath,
  [
    '--test',
    `--test-concurrency=${concurrency}`,
    '--test-reporter=spec',
    ...guards,
    ...passThrough,
    ...files,
  ],
  { stdio: 'inherit', cwd: root },
);
process.exit(result.status ?? 1);
