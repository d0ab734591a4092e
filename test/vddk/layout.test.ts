/**
 * The koffi declarations match the C compiler's layout of the same structs (native/include/
 * vixDiskLib.h, VDDK 7/8 layouts), and the library loader names the file and symbol it misses.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import koffi from 'koffi';
import {
  bindLibrary,
  STRUCT_FIELDS,
  VDDK_FUNCTIONS,
  vddkTypes,
  type VddkTypes,
} from '../../src/vddk/declarations.js';
import { LAB_LIBDIR, locateLibrary } from '../../src/vddk/library-path.js';
import { VddkLibraryError } from '../../src/vddk/errors.js';

const header = join(LAB_LIBDIR, 'include', 'vixDiskLib.h');

test('every struct has the size and field offsets the C compiler gives', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vbproxy-layout-'));
  try {
    const lines: string[] = [];
    for (const [name, fields] of Object.entries(STRUCT_FIELDS)) {
      lines.push(`  printf("${name} %zu\\n", sizeof(${name}));`);
      for (const f of fields) lines.push(`  printf("${name}.${f} %zu\\n", offsetof(${name}, ${f}));`);
    }
    const src = `#include <stdio.h>\n#include <stddef.h>\n#include "vixDiskLib.h"\nint main(void) {\n${lines.join('\n')}\n  return 0;\n}\n`;
    writeFileSync(join(dir, 'layout.c'), src);
    const cc = spawnSync(
      'cc',
      ['-std=c11', '-I', join(LAB_LIBDIR, 'include'), '-o', join(dir, 'layout'), join(dir, 'layout.c')],
      {
        encoding: 'utf8',
      },
    );
    assert.equal(cc.status, 0, cc.stderr);
    const run = spawnSync(join(dir, 'layout'), { encoding: 'utf8' });
    assert.equal(run.status, 0);
    const c = new Map(
      run.stdout
        .trim()
        .split('\n')
        .map((l) => l.split(' ') as [string, string])
        .map(([k, v]) => [k, Number(v)]),
    );
    const t = vddkTypes();
    let checked = 0;
    for (const [name, fields] of Object.entries(STRUCT_FIELDS)) {
      const type = t[name as keyof VddkTypes];
      assert.equal(koffi.sizeof(type), c.get(name), `sizeof(${name})`);
      for (const f of fields) {
        assert.equal(koffi.offsetof(type, f), c.get(`${name}.${f}`), `offsetof(${name}, ${f})`);
        checked++;
      }
    }
    assert.equal(checked, 37);
    // The figures of docs/vddk.md (VDDK 7/8): 128-byte connect params, 64-byte info.
    assert.equal(c.get('VixDiskLibConnectParams'), 128);
    assert.equal(c.get('VixDiskLibInfo'), 64);
    assert.equal(c.get('VixDiskLibBlockList.blocks'), 8);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the declaration table and the C header list the same functions', () => {
  const text = readFileSync(header, 'utf8');
  const inHeader = [...text.matchAll(/\b(VixDiskLib(?:Lab)?_\w+)\s*\(/g)].map((m) => m[1]).sort();
  assert.deepEqual([...new Set(inHeader)], Object.keys(VDDK_FUNCTIONS).sort());
});

test('a library that does not load, or lacks a symbol, names the file, the symbol and what to set', () => {
  assert.throws(
    () => bindLibrary('/nonexistent/lib64/libvixDiskLib.so.8'),
    (err: unknown) =>
      err instanceof VddkLibraryError &&
      err.code === 'VDDK_LIBRARY_LOAD' &&
      /\/nonexistent\/lib64\/libvixDiskLib\.so\.8/.test(err.message) &&
      /LD_LIBRARY_PATH/.test(err.message),
  );
  assert.throws(
    () => bindLibrary('libz.so.1'),
    (err: unknown) =>
      err instanceof VddkLibraryError &&
      err.code === 'VDDK_SYMBOL_MISSING' &&
      /libz\.so\.1 has no symbol VixDiskLib_InitEx/.test(err.message) &&
      /VBPROXY_VDDK_LIBDIR/.test(err.message),
  );
  assert.throws(
    () => locateLibrary({ libDir: '/nonexistent' }),
    /no libvixDiskLib\.so\.8 or libvixDiskLib\.so\.7 under \/nonexistent\/lib64/,
  );
  assert.equal(locateLibrary().libraryPath, join(LAB_LIBDIR, 'lib64', 'libvixDiskLib.so.8'));
});
