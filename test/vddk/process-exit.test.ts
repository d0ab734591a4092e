import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createLab, createBaseDisk } from './fixtures.js';

const child = new URL('./exit-child.js', import.meta.url).pathname;

function run(args: string[]): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [child, ...args], { stdio: 'ignore' });
    p.once('exit', (code, signal) => resolve({ code, signal }));
  });
}

test('process.exit() without Vddk.exit() ends the process normally (the library stays mapped)', async () => {
  const lab = createLab();
  try {
    const disk = createBaseDisk(lab, { folder: 'exit', name: 'exit', capacity: 1024 * 1024 });
    const results = await Promise.all(
      Array.from({ length: 6 }, () => run([lab.configFile, disk.descriptor])),
    );
    assert.deepEqual(
      results,
      results.map(() => ({ code: 7, signal: null })),
    );
  } finally {
    lab.remove();
  }
});
