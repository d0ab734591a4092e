import { allFields, isPrimitive, isSubtype, MOREF_TYPE, schemaEnums, schemaTypes } from './schema.js';
import type { VimObject, VimValue } from './values.js';

/**
 * Serialises vim25 values to XML the way vCenter does: fields in XSD order of the concrete type,
 * `xsi:type` wherever the concrete type differs from the declared one and on every value in an
 * anyType slot, arrays as repeated elements (an anyType array as `ArrayOfX` with `<X>` items).
 * Used by the lab vSphere for its answers; the client side sends through node-soap.
 */

export function xmlEscape(s: string): string {
  return s.replace(/[&<>"']/g, (c) =>
    c === '&' ? '&amp;' : c === '<' ? '&lt;' : c === '>' ? '&gt;' : c === '"' ? '&quot;' : '&apos;',
  );
}

function primText(v: VimValue): string {
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number' || typeof v === 'bigint' || typeof v === 'string') return String(v);
  throw new Error(`expected a primitive, got ${JSON.stringify(v)}`);
}

function anyTypeOf(v: VimValue): string {
  if (typeof v === 'string') return 'xsd:string';
  if (typeof v === 'boolean') return 'xsd:boolean';
  if (typeof v === 'bigint') return 'xsd:long';
  if (typeof v === 'number') return Number.isInteger(v) ? 'xsd:int' : 'xsd:double';
  if (Array.isArray(v)) throw new Error('bare array in an anyType slot; use arrayOf()');
  return v._type;
}

/** Writes `<name>` holding `v` of declared type `declared` into `out`. */
export function writeElement(out: string[], name: string, v: VimValue, declared: string): void {
  if (declared === 'xsd:anyType') {
    const concrete = anyTypeOf(v);
    if (isPrimitive(concrete) || schemaEnums.has(concrete)) {
      const raw = typeof v === 'object' && !Array.isArray(v) && '_value' in v ? (v._value as VimValue) : v;
      out.push(`<${name} xsi:type="${concrete}">${xmlEscape(primText(raw))}</${name}>`);
      return;
    }
    writeComplex(out, name, v as VimObject, concrete, true);
    return;
  }
  if (isPrimitive(declared) || schemaEnums.has(declared)) {
    out.push(`<${name}>${xmlEscape(primText(v))}</${name}>`);
    return;
  }
  writeComplex(out, name, v as VimObject, declared, false);
}

function writeComplex(
  out: string[],
  name: string,
  obj: VimObject,
  declared: string,
  forceType: boolean,
): void {
  const concrete = obj._type ?? declared;
  if (concrete === MOREF_TYPE) {
    const t = forceType || declared !== MOREF_TYPE ? ` xsi:type="${MOREF_TYPE}"` : '';
    out.push(`<${name} type="${xmlEscape(String(obj.type))}"${t}>${xmlEscape(String(obj.value))}</${name}>`);
    return;
  }
  if (!schemaTypes.has(concrete)) throw new Error(`${name}: type ${concrete} is not in the vim25 subset`);
  if (!forceType && !isSubtype(concrete, declared))
    throw new Error(`${name}: ${concrete} is not a ${declared}`);
  const typeAttr = forceType || concrete !== declared ? ` xsi:type="${concrete}"` : '';
  out.push(`<${name}${typeAttr}>`);
  for (const f of allFields(concrete)) {
    const fv = obj[f.name];
    if (fv === undefined) {
      if (f.min === 1 && !f.array) throw new Error(`${name}.${f.name}: required by ${concrete}`);
      continue;
    }
    if (f.array) {
      for (const item of fv as VimValue[]) writeElement(out, f.name, item, f.type);
    } else {
      writeElement(out, f.name, fv, f.type);
    }
  }
  out.push(`</${name}>`);
}
