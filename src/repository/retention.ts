/**
 * Retention (prune) selection, with the semantics of Proxmox Backup Server: the rules are applied
 * in the order last, hourly, daily, weekly, monthly, yearly; each walks the points newest first,
 * keeps the newest point of each period not already covered by a kept point, until it has kept
 * its count; a point a rule passes over inside an already-kept period is removed and no later rule
 * keeps it. Periods are computed in UTC; weeks are ISO weeks (Monday to Sunday).
 */
export interface RetentionPolicy {
  keepLast?: number;
  keepHourly?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
  keepYearly?: number;
}

export interface Dated {
  readonly id: string;
  readonly time: Date;
}

export type RetentionRule = 'last' | 'hourly' | 'daily' | 'weekly' | 'monthly' | 'yearly';

export interface RetentionDecision {
  readonly keep: boolean;
  /** The rule that kept the point (undefined for removed points). */
  readonly rule?: RetentionRule;
}

const pad = (n: number, w = 2): string => String(n).padStart(w, '0');

function isoWeek(d: Date): string {
  const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  const day = t.getUTCDay() || 7;
  t.setUTCDate(t.getUTCDate() + 4 - day);
  const yearStart = Date.UTC(t.getUTCFullYear(), 0, 1);
  const week = Math.ceil(((t.getTime() - yearStart) / 86_400_000 + 1) / 7);
  return `${t.getUTCFullYear()}-W${pad(week)}`;
}

const periodOf: Record<RetentionRule, (p: Dated) => string> = {
  last: (p) => p.id,
  hourly: (p) =>
    `${p.time.getUTCFullYear()}-${pad(p.time.getUTCMonth() + 1)}-${pad(p.time.getUTCDate())}T${pad(p.time.getUTCHours())}`,
  daily: (p) => `${p.time.getUTCFullYear()}-${pad(p.time.getUTCMonth() + 1)}-${pad(p.time.getUTCDate())}`,
  weekly: (p) => isoWeek(p.time),
  monthly: (p) => `${p.time.getUTCFullYear()}-${pad(p.time.getUTCMonth() + 1)}`,
  yearly: (p) => String(p.time.getUTCFullYear()),
};

/** Each rule and the policy field that counts it, in the order the rules are applied. */
export const RETENTION_RULES: ReadonlyArray<readonly [RetentionRule, keyof RetentionPolicy]> = [
  ['last', 'keepLast'],
  ['hourly', 'keepHourly'],
  ['daily', 'keepDaily'],
  ['weekly', 'keepWeekly'],
  ['monthly', 'keepMonthly'],
  ['yearly', 'keepYearly'],
];

export function policyIsEmpty(policy: RetentionPolicy): boolean {
  return RETENTION_RULES.every(([, k]) => !policy[k]);
}

/** Decides for every point whether the policy keeps it. */
export function selectRetention(
  points: readonly Dated[],
  policy: RetentionPolicy,
): Map<string, RetentionDecision> {
  const list = [...points].sort((a, b) => b.time.getTime() - a.time.getTime() || (a.id < b.id ? 1 : -1));
  const marks = new Map<string, RetentionDecision>();
  for (const [rule, key] of RETENTION_RULES) {
    const count = policy[key] ?? 0;
    if (count <= 0) continue;
    const period = periodOf[rule];
    const alreadyIncluded = new Set<string>();
    for (const p of list) if (marks.get(p.id)?.keep) alreadyIncluded.add(period(p));
    const included = new Set<string>();
    for (const p of list) {
      if (marks.has(p.id)) continue;
      const sel = period(p);
      if (alreadyIncluded.has(sel)) continue;
      if (!included.has(sel)) {
        if (included.size >= count) break;
        included.add(sel);
        marks.set(p.id, { keep: true, rule });
      } else {
        marks.set(p.id, { keep: false });
      }
    }
  }
  const out = new Map<string, RetentionDecision>();
  for (const p of list) out.set(p.id, marks.get(p.id)?.keep ? marks.get(p.id)! : { keep: false });
  return out;
}
