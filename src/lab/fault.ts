import type { VimValue } from '../vsphere/wire/values.js';

/** A vim25 fault raised by the lab vSphere, sent as a SOAP fault or as a task error. */
export class LabFault extends Error {
  constructor(
    readonly faultType: string,
    message: string,
    readonly fields: Record<string, VimValue> = {},
  ) {
    super(message);
  }
}

/** Fault injection rules (docs/lab.md 6.5). */
export interface FaultRule {
  /** The vim25 method, e.g. `CreateSnapshot_Task`, or `*` for any. */
  readonly method: string;
  /** Only calls whose `_this` has this moref value (or whose VM has this name). */
  readonly object?: string | undefined;
  /**
   * `fault` answers with a SOAP fault, `task` makes the task fail, `drop` closes the connection,
   * `missing` reports property `path` of the object in `missingSet` (a per-property fault, e.g.
   * NotAuthenticated for a missing privilege) instead of its value.
   */
  readonly action: 'fault' | 'task' | 'drop' | 'missing';
  /** For `missing`: the property path. */
  readonly path?: string | undefined;
  /** The vim25 fault type for `fault` and `task`, e.g. `InvalidPowerState`. */
  readonly fault?: string | undefined;
  readonly message?: string | undefined;
  /** Extra fault fields, e.g. `{ existingState: 'poweredOff' }`. */
  readonly fields?: Record<string, string | number | boolean> | undefined;
  /** How many calls it applies to (default 1); 0 means every call until cleared. */
  readonly times?: number | undefined;
}
