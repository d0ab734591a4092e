import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { insertJob, finishJob, markJobRunning } from '../../src/catalog/jobs.js';
import { liveJobs } from '../../src/jobs/liveness.js';
import { globToRegExp } from '../../src/jobs/policy-vms.js';
import { openQueues, QUEUE_NAMES, type Queues } from '../../src/jobs/queues.js';
import { DiskSlots } from '../../src/jobs/semaphore.js';
import { createTestDatabase, type TestDatabase } from '../catalog/test-db.js';

let db: TestDatabase;
let queues: Queues;
let redis: Redis;
const prefix = `vbptest-${randomBytes(5).toString('hex')}`;

before(async () => {
  db = await createTestDatabase();
  queues = openQueues({ host: '127.0.0.1', port: 6379 }, prefix);
  redis = new Redis({ host: '127.0.0.1', port: 6379 });
});
after(async () => {
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
  await queues.close();
  await db.drop();
});

test('a running job is live only while its worker holds the BullMQ lock; the asking job never is', async () => {
  const ids = { queued: randomUUID(), locked: randomUUID(), dead: randomUUID(), done: randomUUID() };
  for (const id of Object.values(ids)) {
    await insertJob(db.pool, { id, type: 'backup', trigger: 'manual', queue: QUEUE_NAMES.backup });
  }
  for (const id of [ids.locked, ids.dead, ids.done]) await markJobRunning(db.pool, id, null);
  await finishJob(db.pool, ids.done, { state: 'succeeded' });
  await redis.set(`${prefix}:${QUEUE_NAMES.backup}:${ids.locked}:lock`, 'token', 'PX', 30_000);

  const live = await liveJobs(db.pool, queues, 'someone-else');
  assert.deepEqual([...live].sort(), [ids.queued, ids.locked].sort());
  // The dead worker's job (running, no lock) is not live: what it left is an orphan.
  assert.ok(!live.has(ids.dead));
  // A job asking about itself: what carries its own id was left by an earlier attempt.
  assert.ok(!(await liveJobs(db.pool, queues, ids.locked)).has(ids.locked));
  // Lock expired: no longer live.
  await redis.del(`${prefix}:${QUEUE_NAMES.backup}:${ids.locked}:lock`);
  assert.ok(!(await liveJobs(db.pool, queues, 'someone-else')).has(ids.locked));
});

test('disk slots: at most N at once across jobs, released slots go to waiters in order', async () => {
  const slots = new DiskSlots(2);
  const r1 = await slots.acquire();
  const r2 = await slots.acquire();
  const order: number[] = [];
  const w3 = slots.acquire().then((r) => (order.push(3), r));
  const w4 = slots.acquire().then((r) => (order.push(4), r));
  await new Promise((r) => setImmediate(r));
  assert.equal(slots.inUse, 2);
  assert.deepEqual(order, []);
  r1();
  r1(); // a second release of the same slot is ignored
  const r3 = await w3;
  assert.deepEqual(order, [3]);
  r2();
  const r4 = await w4;
  assert.deepEqual(order, [3, 4]);
  r3();
  r4();
  assert.equal(slots.inUse, 0);
});

test('policy name patterns are anchored, case-insensitive globs', () => {
  const re = globToRegExp('web*');
  assert.ok(re.test('web01') && re.test('WEB02'));
  assert.ok(!re.test('oldweb01'));
  assert.ok(globToRegExp('db0?').test('db01'));
  assert.ok(!globToRegExp('db0?').test('db011'));
  assert.ok(globToRegExp('a.b').test('a.b') && !globToRegExp('a.b').test('axb'));
});
