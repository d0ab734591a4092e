/**
 * VDDK's calling rules, broken on purpose by calling the lab library directly (the binding's
 * declaration table, koffi on this thread and on koffi's async threads): the library refuses with
 * VDDK's codes and the binding's error mapping gives the rule-violation class.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import koffi from 'koffi';
import {
  bindLibrary,
  resultError,
  type BoundLibrary,
  type Pointer,
  type VixResult,
} from '../../src/vddk/declarations.js';
import { locateLibrary } from '../../src/vddk/library-path.js';
import { Vix, vixCode, VddkRuleViolationError, VddkNotFoundError } from '../../src/vddk/errors.js';
import { createLab, createBaseDisk, pattern, type Lab, type DiskFile } from './fixtures.js';

let lib: BoundLibrary;
let lab: Lab;
let disk: DiskFile;
const messages: { level: string; text: string }[] = [];
let callbacks: bigint[] = [];
const completions = new Map<number, (result: VixResult) => void>();
let completionCb: bigint;

const libc = koffi.load('libc.so.6');
const vsnprintf = libc.func('int vsnprintf(void *buf, size_t size, void *fmt, void *ap)') as (
  b: Buffer,
  n: number,
  f: Pointer,
  a: Pointer,
) => number;

function logger(level: string) {
  return (fmt: Pointer, ap: Pointer) => {
    const buf = Buffer.alloc(4096);
    const n = vsnprintf(buf, buf.length, fmt, ap);
    messages.push({ level, text: buf.toString('utf8', 0, Math.min(n, buf.length - 1)) });
  };
}

function lastWarning(): string {
  return [...messages].reverse().find((m) => m.level === 'warn')?.text ?? '';
}

/** The error the binding would raise for this result. */
function errorOf(op: string, raw: VixResult) {
  return resultError(lib, op, raw, disk.dsPath, lastWarning());
}

function asyncCall<T>(fn: { async: (...args: never[]) => void }, ...args: unknown[]): Promise<T> {
  return new Promise((resolve, reject) =>
    (fn.async as (...a: unknown[]) => void)(...args, (err: unknown, res: T) =>
      err ? reject(err) : resolve(res),
    ),
  );
}

function openLocal(flags = 0): { conn: Pointer; handle: Pointer } {
  const conn: [Pointer | null] = [null];
  assert.equal(vixCode(lib.fn.VixDiskLib_ConnectEx(null, 0, null, null, conn)), Vix.OK);
  const handle: [Pointer | null] = [null];
  assert.equal(vixCode(lib.fn.VixDiskLib_Open(conn[0], disk.descriptor, flags, handle)), Vix.OK);
  return { conn: conn[0], handle: handle[0] };
}

before(() => {
  lab = createLab();
  disk = createBaseDisk(lab, {
    folder: 'rules',
    name: 'rules',
    capacity: 1024 * 1024,
    writes: [{ offset: 0, data: pattern(65536, 1) }],
  });
  lib = bindLibrary(locateLibrary().libraryPath);
  const t = lib.types;
  callbacks = ['info', 'warn', 'panic'].map((l) =>
    koffi.register(logger(l), koffi.pointer(t.VixDiskLibGenericLogFunc)),
  );
  completionCb = koffi.register((data: Pointer, result: VixResult) => {
    const id = Number(data as bigint);
    completions.get(id)?.(result);
    completions.delete(id);
  }, koffi.pointer(t.VixDiskLibCompletionCB));
});

after(() => {
  for (const cb of [...callbacks, completionCb]) koffi.unregister(cb);
  lab.remove();
});

test('InitEx logs through the va_list callback, and a second InitEx in the process is refused', () => {
  const raw = lib.fn.VixDiskLib_InitEx(
    7,
    0,
    callbacks[0]!,
    callbacks[1]!,
    callbacks[2]!,
    null,
    lab.configFile,
  );
  assert.equal(vixCode(raw), Vix.OK);
  const init = messages.find((m) => m.text.includes('initialised'));
  assert.ok(init, 'InitEx logged a message');
  // The varargs were formatted: API version, thread count and the config path.
  assert.match(
    init.text,
    new RegExp(`initialised for API 7\\.0 with 4 I/O threads, config ${lab.configFile}`),
  );
  const again = lib.fn.VixDiskLib_InitEx(
    7,
    0,
    callbacks[0]!,
    callbacks[1]!,
    callbacks[2]!,
    null,
    lab.configFile,
  );
  assert.equal(typeof again, 'bigint', 'the lab sets high bits in errors');
  assert.ok((again as bigint) > 0xffffn);
  assert.equal(vixCode(again), Vix.E_OBJECT_IS_BUSY);
  const err = errorOf('VixDiskLib_InitEx', again);
  assert.ok(err instanceof VddkRuleViolationError);
  assert.match(err.message, /InitEx once per process/);
});

test('Close from another thread than Open is refused with VIX_E_OBJECT_IS_BUSY', async () => {
  const { conn, handle } = openLocal();
  const raw = await asyncCall<VixResult>(lib.fn.VixDiskLib_Close, handle); // runs on a koffi worker thread
  assert.equal(vixCode(raw), Vix.E_OBJECT_IS_BUSY);
  const err = errorOf('VixDiskLib_Close', raw);
  assert.ok(err instanceof VddkRuleViolationError);
  assert.equal(err.transient, false);
  assert.match(err.message, /one thread for every Open and Close/);
  // Opening on another thread is refused the same way.
  const other: [Pointer | null] = [null];
  const rawOpen = await asyncCall<VixResult>(lib.fn.VixDiskLib_Open, conn, disk.descriptor, 0, other);
  assert.equal(vixCode(rawOpen), Vix.E_OBJECT_IS_BUSY);
  assert.equal(vixCode(lib.fn.VixDiskLib_Close(handle)), Vix.OK, 'the owning thread closes it');
  assert.equal(vixCode(lib.fn.VixDiskLib_Disconnect(conn)), Vix.OK);
});

test('two concurrent reads on one handle: the second is refused with VIX_E_OBJECT_IS_BUSY', async () => {
  lab.writeFaults({ 'read.delay.nth': 1, 'read.delay.ms': 1500 });
  const { conn, handle } = openLocal();
  lab.clearFaults();
  // Both reads start at once, each on a koffi thread: whichever takes the handle first is read #1
  // and sleeps in the library, and the other comes while it does (no sleep here guesses when the
  // first has got there, so the machine's speed does not matter).
  const buffers = [Buffer.alloc(4096), Buffer.alloc(4096)];
  const results = await Promise.all(
    buffers.map((b, i) => asyncCall<VixResult>(lib.fn.VixDiskLib_Read, handle, i * 8, 8, b)),
  );
  const codes = results.map((r) => vixCode(r));
  assert.deepEqual(
    [...codes].sort((a, b) => a - b),
    [Vix.OK, Vix.E_OBJECT_IS_BUSY],
    `one read done, one refused (codes ${codes.join(', ')})`,
  );
  const refused = codes.indexOf(Vix.E_OBJECT_IS_BUSY);
  const err = errorOf('VixDiskLib_Read', results[refused]!);
  assert.ok(err instanceof VddkRuleViolationError);
  assert.match(err.message, /concurrent I\/O on one handle/);
  const done = 1 - refused;
  assert.ok(buffers[done]!.equals(disk.content!.subarray(done * 4096, done * 4096 + 4096)));
  assert.equal(vixCode(lib.fn.VixDiskLib_Close(handle)), Vix.OK);
  assert.equal(vixCode(lib.fn.VixDiskLib_Disconnect(conn)), Vix.OK);
});

test('an unaligned buffer on an unbuffered disk is refused with VIX_E_INVALID_ARG', () => {
  const { conn, handle } = openLocal(1 /* UNBUFFERED */);
  const mem = Buffer.alloc(8192);
  const base = koffi.address(mem);
  const aligned = (base + 511n) & ~511n;
  const raw = lib.fn.VixDiskLib_Read(handle, 0, 1, aligned + 1n);
  assert.equal(vixCode(raw), Vix.E_INVALID_ARG);
  const err = errorOf('VixDiskLib_Read', raw);
  assert.ok(err instanceof VddkRuleViolationError);
  assert.match(err.message, /sector-aligned/);
  assert.equal(vixCode(lib.fn.VixDiskLib_Read(handle, 0, 1, aligned)), Vix.OK);
  const off = Number(aligned - base);
  assert.ok(mem.subarray(off, off + 512).equals(disk.content!.subarray(0, 512)));
  assert.equal(vixCode(lib.fn.VixDiskLib_Close(handle)), Vix.OK);
  assert.equal(vixCode(lib.fn.VixDiskLib_Disconnect(conn)), Vix.OK);
});

test('ReadAsync completes from a library thread; sync I/O and Close while it is in flight are refused', async () => {
  lab.writeFaults({ 'read.delay.nth': '*', 'read.delay.ms': 400 });
  const { conn, handle } = openLocal();
  lab.clearFaults();
  const buf = Buffer.alloc(65536);
  const done = new Promise<VixResult>((resolve) => completions.set(7, resolve));
  const raw = lib.fn.VixDiskLib_ReadAsync(handle, 0, 128, buf, completionCb, 7);
  assert.equal(vixCode(raw), Vix.ASYNC);
  const mixed = lib.fn.VixDiskLib_Read(handle, 0, 1, Buffer.alloc(512));
  assert.equal(vixCode(mixed), Vix.E_ASYNC_MIXEDMODE_UNSUPPORTED);
  assert.ok(errorOf('VixDiskLib_Read', mixed) instanceof VddkRuleViolationError);
  const busyClose = lib.fn.VixDiskLib_Close(handle);
  assert.equal(vixCode(busyClose), Vix.E_OBJECT_IS_BUSY);
  // koffi relays the callback to this thread's event loop; keep the loop alive while it comes.
  const keepAlive = setInterval(() => undefined, 1000);
  const result = await done;
  clearInterval(keepAlive);
  assert.equal(vixCode(result), Vix.OK);
  assert.equal(vixCode(lib.fn.VixDiskLib_Wait(handle)), Vix.OK);
  assert.ok(buf.equals(disk.content!.subarray(0, 65536)));
  // An unknown metadata key is VIX_E_DISK_KEY_NOTFOUND.
  const need: [number] = [0];
  const missing = lib.fn.VixDiskLib_ReadMetadata(handle, 'ddb.nope', null, 0, need);
  assert.ok(errorOf('VixDiskLib_ReadMetadata', missing) instanceof VddkNotFoundError);
  assert.equal(vixCode(lib.fn.VixDiskLib_Close(handle)), Vix.OK);
  assert.equal(vixCode(lib.fn.VixDiskLib_Disconnect(conn)), Vix.OK);
});

test('after Exit, calls fail with VIX_E_DISK_NOINIT and InitEx stays refused', () => {
  lib.fn.VixDiskLib_Exit();
  const conn: [Pointer | null] = [null];
  const raw = lib.fn.VixDiskLib_ConnectEx(null, 0, null, null, conn);
  assert.equal(vixCode(raw), Vix.E_DISK_NOINIT);
  assert.ok(errorOf('VixDiskLib_ConnectEx', raw) instanceof VddkRuleViolationError);
  const again = lib.fn.VixDiskLib_InitEx(7, 0, null, null, null, null, null);
  assert.equal(vixCode(again), Vix.E_OBJECT_IS_BUSY);
});
