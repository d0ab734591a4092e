/**
 * Crash points for the end-to-end tests: with `VBPROXY_CRASH_AT=<step>` in its environment, a
 * worker process kills itself with SIGKILL when a backup reaches that step, exactly as a power cut
 * or an OOM kill would. Unset (always, in production), `crashPoint` does nothing.
 *
 * Steps: `after-snapshot`, `after-hotadd`, `mid-read`, `before-commit`, `after-commit`.
 */
export const CRASH_STEPS = [
  'after-snapshot',
  'after-hotadd',
  'mid-read',
  'before-commit',
  'after-commit',
] as const;
export type CrashStep = (typeof CRASH_STEPS)[number];

export function crashPoint(step: CrashStep): void {
  if (process.env.VBPROXY_CRASH_AT === step) process.kill(process.pid, 'SIGKILL');
}

/** True when the worker should crash at `step` (the caller decides the exact moment). */
export function crashArmed(step: CrashStep): boolean {
  return process.env.VBPROXY_CRASH_AT === step;
}
