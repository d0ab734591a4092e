import { test } from 'node:test';
import assert from 'node:assert/strict';
import { policyIsEmpty, selectRetention, type RetentionPolicy } from '../../src/repository/retention.js';

interface Case {
  name: string;
  times: string[];
  policy: RetentionPolicy;
  keep: string[];
}

// Times are UTC; a point's id is its time. `keep` lists the kept times.
const cases: Case[] = [
  {
    name: 'keep-last keeps the newest N',
    times: [
      '2026-01-01T10:00:00Z',
      '2026-01-02T10:00:00Z',
      '2026-01-03T10:00:00Z',
      '2026-01-04T10:00:00Z',
      '2026-01-05T10:00:00Z',
    ],
    policy: { keepLast: 3 },
    keep: ['2026-01-03T10:00:00Z', '2026-01-04T10:00:00Z', '2026-01-05T10:00:00Z'],
  },
  {
    name: 'keep-daily keeps the newest point of each of the last N days that have points',
    times: [
      '2026-03-01T01:00:00Z',
      '2026-03-01T23:00:00Z',
      '2026-03-02T08:00:00Z',
      '2026-03-02T09:00:00Z',
      '2026-03-04T00:30:00Z',
    ],
    policy: { keepDaily: 2 },
    keep: ['2026-03-02T09:00:00Z', '2026-03-04T00:30:00Z'],
  },
  {
    name: 'keep-last then keep-daily: days already covered by a kept point are skipped',
    times: [
      '2026-03-01T01:00:00Z',
      '2026-03-01T23:00:00Z',
      '2026-03-02T08:00:00Z',
      '2026-03-02T09:00:00Z',
      '2026-03-03T10:00:00Z',
      '2026-03-03T11:00:00Z',
    ],
    policy: { keepLast: 1, keepDaily: 2 },
    keep: ['2026-03-01T23:00:00Z', '2026-03-02T09:00:00Z', '2026-03-03T11:00:00Z'],
  },
  {
    name: 'keep-weekly uses ISO weeks (Monday starts a week; 2026-01-04 is a Sunday of week 1)',
    times: ['2026-01-03T12:00:00Z', '2026-01-04T12:00:00Z', '2026-01-05T00:01:00Z', '2025-12-28T12:00:00Z'],
    policy: { keepWeekly: 2 },
    keep: ['2026-01-04T12:00:00Z', '2026-01-05T00:01:00Z'],
  },
  {
    name: 'keep-hourly',
    times: ['2026-05-05T10:05:00Z', '2026-05-05T10:55:00Z', '2026-05-05T11:00:00Z', '2026-05-05T13:59:59Z'],
    policy: { keepHourly: 2 },
    keep: ['2026-05-05T11:00:00Z', '2026-05-05T13:59:59Z'],
  },
  {
    name: 'daily + weekly + monthly + yearly over a long history',
    times: [
      '2024-06-30T00:00:00Z', // monthly, second month (2024-06)
      '2025-11-15T00:00:00Z', // monthly, first month not yet covered (2025-11)
      '2025-12-20T00:00:00Z', // removed: its month is covered by 2025-12-31
      '2025-12-31T00:00:00Z', // weekly, second week (2026-W01 runs 2025-12-29..2026-01-04)
      '2026-01-10T00:00:00Z', // weekly, first week not covered by the daily points (2026-W02)
      '2026-01-12T00:00:00Z', // removed: 2026-W03 is covered by the daily points
      '2026-01-13T00:00:00Z', // removed: likewise
      '2026-01-14T00:00:00Z', // daily
      '2026-01-15T00:00:00Z', // daily
    ],
    // yearly finds 2026, 2025 and 2024 already covered and keeps nothing more
    policy: { keepDaily: 2, keepWeekly: 2, keepMonthly: 2, keepYearly: 3 },
    keep: [
      '2024-06-30T00:00:00Z',
      '2025-11-15T00:00:00Z',
      '2025-12-31T00:00:00Z',
      '2026-01-10T00:00:00Z',
      '2026-01-14T00:00:00Z',
      '2026-01-15T00:00:00Z',
    ],
  },
  {
    name: 'a count larger than the history keeps everything',
    times: ['2026-01-01T00:00:00Z', '2026-01-02T00:00:00Z'],
    policy: { keepLast: 10 },
    keep: ['2026-01-01T00:00:00Z', '2026-01-02T00:00:00Z'],
  },
];

for (const c of cases) {
  test(`prune selection: ${c.name}`, () => {
    const decisions = selectRetention(
      c.times.map((t) => ({ id: t, time: new Date(t) })),
      c.policy,
    );
    const kept = [...decisions]
      .filter(([, d]) => d.keep)
      .map(([id]) => id)
      .sort();
    assert.deepEqual(kept, [...c.keep].sort());
    assert.equal(decisions.size, c.times.length);
  });
}

test('an empty policy is recognised (prune refuses it)', () => {
  assert.equal(policyIsEmpty({}), true);
  assert.equal(policyIsEmpty({ keepDaily: 0 }), true);
  assert.equal(policyIsEmpty({ keepYearly: 1 }), false);
});
