/**
 * The in-memory shape of vim25 values on both sides of the wire (client and lab): data objects
 * carry their concrete type in `_type`, arrays are always arrays, MoRefs are `{type, value}`,
 * `xsd:long` values are numbers when they are safe integers and bigints beyond 2^53 (exact),
 * dateTimes are ISO strings.
 */

export interface MoRef {
  readonly _type: 'ManagedObjectReference';
  /** The managed object type, e.g. `VirtualMachine`. */
  readonly type: string;
  /** The opaque id, e.g. `vm-42`. Never parse it. */
  readonly value: string;
}

/** A primitive in an `anyType` position whose XSD type must be stated (xsd:long, an enum, ...). */
export interface TypedPrimitive {
  readonly _type: string;
  readonly _value: string | number | bigint | boolean;
}

export type VimLong = number | bigint;

export type VimValue = string | number | bigint | boolean | MoRef | TypedPrimitive | VimObject | VimValue[];

export interface VimObject {
  readonly _type: string;
  readonly [field: string]: VimValue | undefined;
}

export function moref(type: string, value: string): MoRef {
  return { _type: 'ManagedObjectReference', type, value };
}

export function isMoRef(v: unknown): v is MoRef {
  return typeof v === 'object' && v !== null && (v as { _type?: unknown })._type === 'ManagedObjectReference';
}

export function sameMoRef(a: MoRef | undefined, b: MoRef | undefined): boolean {
  return a !== undefined && b !== undefined && a.type === b.type && a.value === b.value;
}

export function isVimObject(v: unknown): v is VimObject {
  return (
    typeof v === 'object' &&
    v !== null &&
    !Array.isArray(v) &&
    typeof (v as { _type?: unknown })._type === 'string'
  );
}

/** A typed `xsd:long` (or other primitive) for anyType positions. */
export function typed(type: string, value: string | number | bigint | boolean): TypedPrimitive {
  return { _type: type, _value: value };
}

/** An `ArrayOf<item>` value for anyType positions (e.g. a property value). */
export function arrayOf(itemType: string, items: VimValue[]): VimObject {
  return { _type: `ArrayOf${itemType}`, [itemType]: items };
}

/** The items of an `ArrayOf<item>` value (what `arrayOf` builds); any other value as it is. */
export function arrayItems(v: VimValue | undefined): VimValue | undefined {
  return isVimObject(v) && v._type.startsWith('ArrayOf') ? v[v._type.slice('ArrayOf'.length)] : v;
}

/** Converts a decoded long to a number, failing clearly when it is not exactly representable. */
export function longToNumber(v: VimLong, what: string): number {
  if (typeof v === 'number') return v;
  if (v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER)) return Number(v);
  throw new RangeError(`${what} (${v}) is beyond 2^53 and cannot be used as a byte count`);
}

/** Reads an optional field of a decoded object with a type guard. */
export function field<T extends VimValue>(
  obj: VimObject | undefined,
  name: string,
  guard: (v: VimValue) => v is T,
): T | undefined {
  const v = obj?.[name];
  return v !== undefined && guard(v) ? v : undefined;
}

export const isString = (v: VimValue): v is string => typeof v === 'string';
export const isNumber = (v: VimValue): v is number => typeof v === 'number';
export const isLong = (v: VimValue): v is VimLong => typeof v === 'number' || typeof v === 'bigint';
export const isBoolean = (v: VimValue): v is boolean => typeof v === 'boolean';
export const isObject = (v: VimValue): v is VimObject => isVimObject(v) && !isMoRef(v);
export const isArray = (v: VimValue): v is VimValue[] => Array.isArray(v);
export const isRef = (v: VimValue): v is MoRef => isMoRef(v);
