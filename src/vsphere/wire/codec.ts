import {
  allFields,
  isPrimitive,
  isSubtype,
  MOREF_TYPE,
  schemaEnums,
  schemaTypes,
  type FieldDef,
} from './schema.js';
import { moref, type VimObject, type VimValue } from './values.js';

/**
 * Request encoding and response decoding between vbproxy's vim25 values (values.ts) and the
 * objects node-soap serialises and parses.
 *
 * Encoding writes every data object's fields in XSD sequence order of its CONCRETE type and puts
 * `xsi:type` on every value whose concrete type differs from the declared one (node-soap orders by
 * the declared type only, so order is decided here). Unknown fields and missing required fields
 * are programming errors and throw.
 *
 * Decoding is schema-driven: arrays are decided by maxOccurs (never by element count), primitives
 * in anyType slots by their xsi:type, longs stay exact (bigint beyond 2^53), fields the subset
 * does not know are dropped.
 */

export class VimEncodeError extends Error {}

/** What node-soap serialises: plain objects with an `attributes` key and `$value` for text. */
export type SoapArg = string | SoapObject | SoapArg[];
export interface SoapObject {
  [key: string]: SoapArg | Record<string, string> | undefined;
}

const XSD_PRIMS = new Set([
  'string',
  'int',
  'long',
  'short',
  'byte',
  'boolean',
  'dateTime',
  'double',
  'float',
  'base64Binary',
  'anyType',
]);

function primitiveText(v: VimValue, type: string, path: string): string {
  switch (type) {
    case 'xsd:boolean':
      if (typeof v !== 'boolean') throw new VimEncodeError(`${path}: expected boolean`);
      return v ? 'true' : 'false';
    case 'xsd:int':
    case 'xsd:short':
    case 'xsd:byte':
      if (typeof v !== 'number' || !Number.isInteger(v))
        throw new VimEncodeError(`${path}: expected integer`);
      return String(v);
    case 'xsd:long':
      if (typeof v === 'bigint' || (typeof v === 'number' && Number.isSafeInteger(v))) return String(v);
      if (typeof v === 'string' && /^-?\d+$/.test(v)) return v;
      throw new VimEncodeError(`${path}: expected a safe integer or bigint`);
    default:
      if (typeof v !== 'string') throw new VimEncodeError(`${path}: expected string`);
      return v;
  }
}

function anyTypeName(v: VimValue): string {
  if (typeof v === 'string') return 'xsd:string';
  if (typeof v === 'boolean') return 'xsd:boolean';
  if (typeof v === 'bigint') return 'xsd:long';
  if (typeof v === 'number') return Number.isInteger(v) ? 'xsd:int' : 'xsd:double';
  if (Array.isArray(v)) throw new VimEncodeError('bare arrays cannot go in an anyType slot; use arrayOf()');
  return v._type;
}

/** Encodes `v` as a value of `declared` type, for node-soap. */
export function encodeValue(v: VimValue, declared: string, path = declared): SoapArg {
  if (declared === 'xsd:anyType') {
    const concrete = anyTypeName(v);
    if (isPrimitive(concrete) || schemaEnums.has(concrete)) {
      const raw = typeof v === 'object' && !Array.isArray(v) && '_value' in v ? (v._value as VimValue) : v;
      return { attributes: { 'xsi:type': concrete }, $value: primitiveText(raw, concrete, path) };
    }
    return encodeComplex(v, concrete, path, true);
  }
  if (isPrimitive(declared) || schemaEnums.has(declared)) return primitiveText(v, declared, path);
  if (declared === MOREF_TYPE) {
    const ref = v as { type?: unknown; value?: unknown };
    if (
      typeof v !== 'object' ||
      Array.isArray(v) ||
      typeof ref.type !== 'string' ||
      typeof ref.value !== 'string'
    ) {
      throw new VimEncodeError(`${path}: expected a ManagedObjectReference`);
    }
    return { attributes: { type: ref.type }, $value: ref.value };
  }
  return encodeComplex(v, declared, path, false);
}

function encodeComplex(v: VimValue, declared: string, path: string, forceType: boolean): SoapObject {
  if (typeof v !== 'object' || Array.isArray(v) || v === null)
    throw new VimEncodeError(`${path}: expected ${declared}`);
  const obj = v as VimObject;
  const concrete = typeof obj._type === 'string' ? obj._type : declared;
  if (concrete === MOREF_TYPE) {
    const ref = encodeValue(v, MOREF_TYPE, path) as SoapObject;
    (ref.attributes as Record<string, string>)['xsi:type'] = MOREF_TYPE;
    return ref;
  }
  if (!schemaTypes.has(concrete))
    throw new VimEncodeError(`${path}: type ${concrete} is not in the vim25 subset`);
  if (!isSubtype(concrete, declared)) throw new VimEncodeError(`${path}: ${concrete} is not a ${declared}`);
  const out: SoapObject = {};
  if (forceType || concrete !== declared) out.attributes = { 'xsi:type': concrete };
  const fields = allFields(concrete);
  const known = new Set(fields.map((f) => f.name));
  for (const key of Object.keys(obj)) {
    if (key !== '_type' && !known.has(key) && obj[key] !== undefined) {
      throw new VimEncodeError(`${path}: ${concrete} has no field ${key}`);
    }
  }
  for (const f of fields) {
    const fv = obj[f.name];
    if (fv === undefined) {
      if (f.min === 1) throw new VimEncodeError(`${path}.${f.name}: required by ${concrete}`);
      continue;
    }
    if (f.array) {
      if (!Array.isArray(fv)) throw new VimEncodeError(`${path}.${f.name}: expected an array`);
      if (fv.length === 0) continue;
      out[f.name] = fv.map((item, i) => encodeValue(item, f.type, `${path}.${f.name}[${i}]`));
    } else {
      out[f.name] = encodeValue(fv, f.type, `${path}.${f.name}`);
    }
  }
  return out;
}

/** Encodes the arguments of an operation request (its request type's fields, in order). */
export function encodeRequest(requestType: string, args: Record<string, VimValue | undefined>): SoapObject {
  return encodeComplex({ _type: requestType, ...args } as VimObject, requestType, requestType, false);
}

// --- Decoding ----------------------------------------------------------------------------------

type Raw = unknown;

function attrsOf(raw: Raw): Record<string, string> | undefined {
  if (typeof raw === 'object' && raw !== null && !Array.isArray(raw) && !(raw instanceof Date)) {
    const a = (raw as { attributes?: unknown }).attributes;
    if (typeof a === 'object' && a !== null) return a as Record<string, string>;
  }
  return undefined;
}

/** The local name of the xsi:type attribute, under whatever prefix the server bound. */
export function xsiTypeOf(raw: Raw): string | undefined {
  const attrs = attrsOf(raw);
  if (!attrs) return undefined;
  for (const [k, v] of Object.entries(attrs)) {
    if (k.endsWith(':type') && typeof v === 'string') {
      const local = v.includes(':') ? v.slice(v.indexOf(':') + 1) : v;
      return XSD_PRIMS.has(local) && !schemaTypes.has(local) ? `xsd:${local}` : local;
    }
  }
  return undefined;
}

function textOf(raw: Raw): string | undefined {
  if (raw === null || raw === undefined) return undefined;
  if (raw instanceof Date) return raw.toISOString();
  if (typeof raw === 'object') {
    const v = (raw as { $value?: unknown }).$value;
    return v === undefined || v === null ? '' : String(v);
  }
  return String(raw);
}

function decodePrimitive(raw: Raw, type: string, path: string): VimValue | undefined {
  const text = textOf(raw);
  if (text === undefined) return type === 'xsd:string' ? '' : undefined;
  switch (type) {
    case 'xsd:boolean':
      return text === 'true' || text === '1';
    case 'xsd:int':
    case 'xsd:short':
    case 'xsd:byte': {
      const n = Number(text);
      if (!Number.isInteger(n)) throw new VimEncodeError(`${path}: "${text}" is not an integer`);
      return n;
    }
    case 'xsd:long': {
      if (!/^\s*-?\d+\s*$/.test(text)) throw new VimEncodeError(`${path}: "${text}" is not a long`);
      const b = BigInt(text.trim());
      return b <= BigInt(Number.MAX_SAFE_INTEGER) && b >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(b) : b;
    }
    case 'xsd:double':
    case 'xsd:float':
      return Number(text);
    default:
      return text;
  }
}

/** Decodes a node-soap value of `declared` type into a vim25 value. */
export function decodeValue(raw: Raw, declared: string, path = declared): VimValue | undefined {
  if (raw === undefined) return undefined;
  const xsiType = xsiTypeOf(raw);
  let type = declared;
  if (xsiType) type = xsiType;
  if (declared === 'xsd:anyType' && !xsiType) return textOf(raw);
  if (type.startsWith('ArrayOf') && schemaTypes.has(type)) {
    const [item] = allFields(type);
    if (!item) return [];
    const inner = raw === null ? undefined : (raw as Record<string, unknown>)[item.name];
    return decodeArray(inner, item.type, path);
  }
  if (isPrimitive(type) || schemaEnums.has(type))
    return decodePrimitive(raw, schemaEnums.has(type) ? 'xsd:string' : type, path);
  if (type === MOREF_TYPE) {
    const attrs = attrsOf(raw);
    return moref(attrs?.type ?? '', textOf(raw) ?? '');
  }
  if (raw === null || typeof raw !== 'object') {
    if (!schemaTypes.has(type)) return textOf(raw);
    return { _type: type };
  }
  // Unknown subtypes (fields the subset does not declare) decode through their declared type.
  const schemaType = schemaTypes.has(type) ? type : schemaTypes.has(declared) ? declared : undefined;
  const out: Record<string, VimValue> = { _type: type };
  if (!schemaType) return out as VimObject;
  const obj = raw as Record<string, unknown>;
  for (const f of allFields(schemaType)) {
    const fv = obj[f.name];
    if (fv === undefined) continue;
    const decoded = f.array
      ? decodeArray(fv, f.type, `${path}.${f.name}`)
      : decodeValue(fv, f.type, `${path}.${f.name}`);
    if (decoded !== undefined) out[f.name] = decoded;
  }
  return out as VimObject;
}

function decodeArray(raw: Raw, itemType: string, path: string): VimValue[] {
  if (raw === undefined || raw === null) return [];
  const items = Array.isArray(raw) ? raw : [raw];
  const out: VimValue[] = [];
  items.forEach((item, i) => {
    const d = decodeValue(item, itemType, `${path}[${i}]`);
    if (d !== undefined) out.push(d);
  });
  return out;
}

/** Decodes the `returnval` of an operation's response element. */
export function decodeReturn(raw: Raw, ret: FieldDef | undefined, op: string): VimValue | undefined {
  if (!ret || raw === undefined || raw === null || typeof raw !== 'object')
    return ret?.array ? [] : undefined;
  const rv = (raw as Record<string, unknown>)[ret.name];
  return ret.array ? decodeArray(rv, ret.type, op) : decodeValue(rv, ret.type, op);
}
