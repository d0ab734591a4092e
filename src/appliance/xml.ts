import { DOMParser } from '@xmldom/xmldom';

/** Namespaces of OVF descriptors (DSP0243) and OVF environments. */
export const NS = {
  ovf: 'http://schemas.dmtf.org/ovf/envelope/1',
  env: 'http://schemas.dmtf.org/ovf/environment/1',
  rasd: 'http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData',
  vssd: 'http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData',
  vmw: 'http://www.vmware.com/schema/ovf',
  ve: 'http://www.vmware.com/schema/ovfenv',
} as const;

/**
 * Parses an XML document strictly: any well-formedness error is thrown as an Error naming the
 * problem (xmldom alone would only report it and return a partial tree). External entities are
 * never resolved.
 */
export function parseXml(text: string): Document {
  const problems: string[] = [];
  const parser = new DOMParser({
    errorHandler: {
      warning: () => undefined,
      error: (msg: string) => problems.push(msg),
      fatalError: (msg: string) => problems.push(msg),
    },
  });
  let doc: Document;
  try {
    doc = parser.parseFromString(text, 'application/xml');
  } catch (err) {
    throw new Error(`not well-formed XML: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  if (problems.length > 0) {
    throw new Error(`not well-formed XML: ${problems[0]!.replace(/\s+/g, ' ').trim()}`);
  }
  if (!doc.documentElement) throw new Error('not an XML document: no root element');
  return doc;
}

/** The element children of `parent` with the given namespace and local name. */
export function childElements(parent: Element | Document, ns: string, localName: string): Element[] {
  const out: Element[] = [];
  const nodes = parent.childNodes;
  for (let i = 0; i < nodes.length; i++) {
    const n = nodes.item(i);
    if (n && n.nodeType === 1) {
      const e = n as Element;
      if (e.namespaceURI === ns && e.localName === localName) out.push(e);
    }
  }
  return out;
}

/** All descendant elements of `parent` with the given namespace and local name, in document order. */
export function descendants(parent: Element | Document, ns: string, localName: string): Element[] {
  const list = parent.getElementsByTagNameNS(ns, localName);
  const out: Element[] = [];
  for (let i = 0; i < list.length; i++) {
    const e = list.item(i);
    if (e) out.push(e);
  }
  return out;
}

/** The trimmed text of the first child element, or undefined. */
export function childText(parent: Element, ns: string, localName: string): string | undefined {
  const e = childElements(parent, ns, localName)[0];
  return e?.textContent?.trim();
}
