import {
  allFields,
  isPrimitive,
  MOREF_TYPE,
  schemaEnums,
  schemaOperations,
  schemaTypes,
} from '../../src/vsphere/wire/schema.js';

/** A minimal XML reader for the test's own checks (well-formed SOAP only). */
export interface XmlElement {
  readonly name: string;
  readonly attrs: Record<string, string>;
  readonly children: XmlElement[];
  text: string;
}

function local(name: string): string {
  const i = name.indexOf(':');
  return i < 0 ? name : name.slice(i + 1);
}

function unescape(s: string): string {
  return s
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'")
    .replace(/&amp;/g, '&');
}

export function parseXml(xml: string): XmlElement {
  const root: XmlElement = { name: '#root', attrs: {}, children: [], text: '' };
  const stack: XmlElement[] = [root];
  const re =
    /<\?[^>]*\?>|<!--[\s\S]*?-->|<(\/?)([A-Za-z_][\w:.-]*)((?:\s+[\w:.-]+\s*=\s*(?:"[^"]*"|'[^']*'))*)\s*(\/?)>|([^<]+)/g;
  for (let m = re.exec(xml); m; m = re.exec(xml)) {
    const [, close, name, attrText, selfClose, text] = m;
    const top = stack[stack.length - 1]!;
    if (text !== undefined) {
      top.text += unescape(text);
      continue;
    }
    if (!name) continue;
    if (close) {
      stack.pop();
      continue;
    }
    const attrs: Record<string, string> = {};
    for (const a of (attrText ?? '').matchAll(/([\w:.-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')/g)) {
      attrs[a[1]!] = unescape(a[2] ?? a[3] ?? '');
    }
    const el: XmlElement = { name: local(name), attrs, children: [], text: '' };
    top.children.push(el);
    if (!selfClose) stack.push(el);
  }
  return root;
}

export function xsiType(el: XmlElement): string | undefined {
  for (const [k, v] of Object.entries(el.attrs)) {
    if (k.endsWith(':type') || k === 'xsi:type')
      return local(v) === v ? v : isXsd(v) ? `xsd:${local(v)}` : local(v);
  }
  return undefined;
}

function isXsd(v: string): boolean {
  return /^(xsd|xs):/.test(v);
}

/** The SOAP Body's first child (the request or response element). */
export function bodyElement(xml: string): XmlElement {
  const env = parseXml(xml).children.find((c) => c.name === 'Envelope');
  const body = env?.children.find((c) => c.name === 'Body');
  const el = body?.children[0];
  if (!el) throw new Error('no SOAP body element');
  return el;
}

/**
 * Checks that `el` (declared as `declared`) follows the XSD sequence of its concrete type:
 * every child is a field of the type, fields appear in sequence order, non-array fields appear at
 * most once, required fields are present. Returns the problems found (empty: valid).
 */
export function checkOrder(el: XmlElement, declared: string, path = el.name): string[] {
  const errors: string[] = [];
  const concrete = xsiType(el) ?? declared;
  if (declared === 'xsd:anyType' && !xsiType(el)) errors.push(`${path}: anyType value without xsi:type`);
  if (concrete === MOREF_TYPE) {
    if (!el.attrs.type) errors.push(`${path}: ManagedObjectReference without type attribute`);
    return errors;
  }
  if (isPrimitive(concrete) || schemaEnums.has(concrete)) {
    if (el.children.length > 0) errors.push(`${path}: primitive ${concrete} has child elements`);
    return errors;
  }
  if (!schemaTypes.has(concrete)) return [`${path}: type ${concrete} is not in the schema`];
  const fields = allFields(concrete);
  let idx = 0;
  let last = -1;
  const seen = new Set<string>();
  for (const child of el.children) {
    let j = idx;
    while (j < fields.length && fields[j]!.name !== child.name) j++;
    if (j >= fields.length) {
      const known = fields.find((f) => f.name === child.name);
      errors.push(
        `${path}: element ${child.name} ${known ? 'is out of XSD order' : `is not a field of ${concrete}`}`,
      );
      if (known) errors.push(...checkOrder(child, known.type, `${path}.${child.name}`));
      continue;
    }
    const f = fields[j]!;
    if (j === last && !f.array) errors.push(`${path}: ${child.name} repeated but not an array`);
    seen.add(f.name);
    last = j;
    idx = j;
    errors.push(...checkOrder(child, f.type, `${path}.${child.name}`));
  }
  for (const f of fields)
    if (f.min === 1 && !seen.has(f.name)) errors.push(`${path}: required ${f.name} missing`);
  return errors;
}

/** Checks a request envelope against its operation's request type. */
export function checkRequest(xml: string): { method: string; errors: string[] } {
  const el = bodyElement(xml);
  const op = schemaOperations.get(el.name);
  if (!op) return { method: el.name, errors: [`${el.name} is not an operation of the schema`] };
  return { method: el.name, errors: checkOrder(el, op.requestType) };
}

/** Every data type used (by xsi:type or declaration) in an element tree, for coverage. */
export function typesUsed(el: XmlElement, declared: string, out = new Set<string>()): Set<string> {
  const concrete = xsiType(el) ?? declared;
  out.add(concrete);
  if (!schemaTypes.has(concrete)) return out;
  const fields = allFields(concrete);
  for (const child of el.children) {
    const f = fields.find((x) => x.name === child.name);
    if (f) typesUsed(child, f.type, out);
  }
  return out;
}

/** The shape of a response: `path[type]` entries, restricted to elements the schema declares. */
export function shape(el: XmlElement, declared: string, path = '', out = new Set<string>()): Set<string> {
  const concrete = xsiType(el) ?? declared;
  const here = `${path}/${el.name}[${concrete.replace(/^xsd:/, 'xsd:')}]`;
  out.add(here);
  if (!schemaTypes.has(concrete)) return out;
  const fields = allFields(concrete);
  for (const child of el.children) {
    const f = fields.find((x) => x.name === child.name);
    if (f) shape(child, f.type, here, out);
  }
  return out;
}
