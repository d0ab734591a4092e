/**
 * The vApp properties of the vbproxy OVA: the one list that first boot validates against and that
 * the OVF descriptor (appliance/ovf/vbproxy.ovf) must declare, key for key and type for type
 * (test/appliance/ovf-descriptor.test.ts checks that they agree).
 */

/** The OVF property types the descriptor uses (DSP0243 `ovf:type`). */
export type OvfPropertyType = 'string' | 'boolean' | 'uint8';

export interface VappProperty {
  /** `ovf:key`, also the key in the OVF environment. */
  readonly key: string;
  readonly type: OvfPropertyType;
  /** `ovf:password="true"`: the vSphere Client masks the value and it is never logged. */
  readonly password: boolean;
  /** The `Category` element the property is listed under in the vSphere Client. */
  readonly category: 'Manager' | 'System' | 'Network';
  /** The `Label` element. */
  readonly label: string;
  /** Whether first boot fails when the value is empty. */
  readonly required: boolean;
}

export const VAPP_PROPERTIES = [
  { key: 'manager.url', type: 'string', password: false, category: 'Manager', label: 'Manager URL', required: true },
  {
    key: 'manager.enrollment_token',
    type: 'string',
    password: true,
    category: 'Manager',
    label: 'Enrollment token',
    required: true,
  },
  {
    key: 'manager.ca_certificate',
    type: 'string',
    password: false,
    category: 'Manager',
    label: 'Manager CA certificate',
    required: false,
  },
  { key: 'system.hostname', type: 'string', password: false, category: 'System', label: 'Hostname', required: true },
  { key: 'system.ntp_servers', type: 'string', password: false, category: 'System', label: 'NTP servers', required: false },
  {
    key: 'system.ssh_authorized_key',
    type: 'string',
    password: false,
    category: 'System',
    label: 'SSH public key',
    required: false,
  },
  {
    key: 'network.mode',
    type: 'string',
    password: false,
    category: 'Network',
    label: 'IP configuration',
    required: true,
  },
  { key: 'network.address', type: 'string', password: false, category: 'Network', label: 'IP address', required: false },
  { key: 'network.prefix', type: 'uint8', password: false, category: 'Network', label: 'Prefix length', required: false },
  { key: 'network.gateway', type: 'string', password: false, category: 'Network', label: 'Gateway', required: false },
  { key: 'network.dns_servers', type: 'string', password: false, category: 'Network', label: 'DNS servers', required: false },
  {
    key: 'network.search_domains',
    type: 'string',
    password: false,
    category: 'Network',
    label: 'DNS search domains',
    required: false,
  },
] as const satisfies readonly VappProperty[];

export type VappPropertyKey = (typeof VAPP_PROPERTIES)[number]['key'];

const byKey = new Map<string, VappProperty>(VAPP_PROPERTIES.map((p) => [p.key, p]));

/** The definition of a vApp property, or undefined for a key the appliance does not know. */
export function vappProperty(key: string): VappProperty | undefined {
  return byKey.get(key);
}
