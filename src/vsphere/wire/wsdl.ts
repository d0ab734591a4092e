import { schemaEnums, schemaOperations, schemaTypes, MOREF_TYPE, type FieldDef } from './schema.js';

/** The vim25 namespace every element of the subset lives in. */
export const VIM25_NS = 'urn:vim25';

function qname(type: string): string {
  return type.startsWith('xsd:') ? type : `vim25:${type}`;
}

function element(f: FieldDef): string {
  const max = f.array ? ' maxOccurs="unbounded"' : '';
  const min = f.min === 0 ? ' minOccurs="0"' : '';
  return `<xsd:element name="${f.name}" type="${qname(f.type)}"${min}${max}/>`;
}

function faultTypes(): string[] {
  const faults: string[] = [];
  for (const name of schemaTypes.keys()) {
    let cur: string | undefined = name;
    while (cur && cur !== 'MethodFault') cur = schemaTypes.get(cur)?.base;
    if (cur === 'MethodFault') faults.push(name);
  }
  return faults;
}

let cached: string | undefined;

/**
 * The subset WSDL (document/literal, like VMware's vimService.wsdl) generated from the schema
 * table. Only what vbproxy sends and reads is declared.
 */
export function vim25SubsetWsdl(): string {
  if (cached) return cached;
  const parts: string[] = [];
  parts.push(
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<definitions targetNamespace="${VIM25_NS}" xmlns="http://schemas.xmlsoap.org/wsdl/"`,
    ` xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/" xmlns:vim25="${VIM25_NS}"`,
    ` xmlns:xsd="http://www.w3.org/2001/XMLSchema">`,
    `<types><xsd:schema targetNamespace="${VIM25_NS}" elementFormDefault="qualified">`,
    `<xsd:complexType name="${MOREF_TYPE}"><xsd:simpleContent><xsd:extension base="xsd:string">`,
    `<xsd:attribute name="type" type="xsd:string"/></xsd:extension></xsd:simpleContent></xsd:complexType>`,
  );
  for (const [name, values] of schemaEnums) {
    parts.push(
      `<xsd:simpleType name="${name}"><xsd:restriction base="xsd:string">`,
      ...values.map((v) => `<xsd:enumeration value="${v}"/>`),
      `</xsd:restriction></xsd:simpleType>`,
    );
  }
  for (const def of schemaTypes.values()) {
    const seq = `<xsd:sequence>${def.own.map(element).join('')}</xsd:sequence>`;
    if (def.base) {
      parts.push(
        `<xsd:complexType name="${def.name}"><xsd:complexContent><xsd:extension base="vim25:${def.base}">`,
        seq,
        `</xsd:extension></xsd:complexContent></xsd:complexType>`,
      );
    } else {
      parts.push(`<xsd:complexType name="${def.name}">${seq}</xsd:complexType>`);
    }
  }
  for (const f of faultTypes()) parts.push(`<xsd:element name="${f}Fault" type="vim25:${f}"/>`);
  for (const o of schemaOperations.values()) {
    parts.push(`<xsd:element name="${o.name}" type="vim25:${o.requestType}"/>`);
    const ret = o.returns ? element(o.returns) : '';
    parts.push(
      `<xsd:element name="${o.name}Response"><xsd:complexType><xsd:sequence>${ret}</xsd:sequence></xsd:complexType></xsd:element>`,
    );
  }
  parts.push(`</xsd:schema></types>`);
  for (const o of schemaOperations.values()) {
    parts.push(
      `<message name="${o.name}RequestMsg"><part name="parameters" element="vim25:${o.name}"/></message>`,
      `<message name="${o.name}ResponseMsg"><part name="parameters" element="vim25:${o.name}Response"/></message>`,
    );
  }
  parts.push(
    `<message name="RuntimeFaultFaultMsg"><part name="fault" element="vim25:RuntimeFaultFault"/></message>`,
  );
  parts.push(`<portType name="VimPortType">`);
  for (const o of schemaOperations.values()) {
    parts.push(
      `<operation name="${o.name}"><input message="vim25:${o.name}RequestMsg"/>`,
      `<output message="vim25:${o.name}ResponseMsg"/><fault name="RuntimeFault" message="vim25:RuntimeFaultFaultMsg"/></operation>`,
    );
  }
  parts.push(`</portType>`, `<binding name="VimBinding" type="vim25:VimPortType">`);
  parts.push(`<soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>`);
  for (const o of schemaOperations.values()) {
    parts.push(
      `<operation name="${o.name}"><soap:operation soapAction="urn:vim25/6.5"/>`,
      `<input><soap:body use="literal"/></input><output><soap:body use="literal"/></output>`,
      `<fault name="RuntimeFault"><soap:fault use="literal" name="RuntimeFault"/></fault></operation>`,
    );
  }
  parts.push(`</binding>`);
  parts.push(
    `<service name="VimService"><port binding="vim25:VimBinding" name="VimPort">`,
    `<soap:address location="https://localhost/sdk"/></port></service>`,
    `</definitions>`,
  );
  cached = parts.join('\n');
  return cached;
}
