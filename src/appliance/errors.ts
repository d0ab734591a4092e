import { VbproxyError } from '../errors.js';

/** A failure of the appliance's first-boot configuration. */
export class ApplianceError extends VbproxyError {}

/** The OVF environment could not be obtained or is not a readable OVF environment document. */
export class OvfEnvironmentError extends ApplianceError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('APPLIANCE_OVF_ENV', message, options);
  }
}

/** One vApp property with a bad value, and what to do about it. */
export interface PropertyIssue {
  /** The property key as in the OVF descriptor, e.g. `network.ipv4_address`. */
  key: string;
  /** The label the vSphere Client shows for the property. */
  label: string;
  /** What is wrong and what a valid value looks like. The value of a password property never appears here. */
  message: string;
}

/** One or more vApp properties have values first boot cannot use. Lists every bad property at once. */
export class PropertyValidationError extends ApplianceError {
  readonly issues: readonly PropertyIssue[];

  constructor(issues: readonly PropertyIssue[]) {
    const lines = issues.map((i) => `  - ${i.label} (${i.key}): ${i.message}`);
    super(
      'APPLIANCE_BAD_PROPERTY',
      `${issues.length} vApp ${issues.length === 1 ? 'property has a bad value' : 'properties have bad values'}; ` +
        `correct them in the VM's vApp Options (Configure > Settings > vApp Options), then power the VM off and on ` +
        `(the OVF environment is read at power-on):\n` +
        lines.join('\n'),
    );
    this.issues = issues;
  }
}

/** Writing the configuration or applying system settings failed. */
export class FirstbootApplyError extends ApplianceError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('APPLIANCE_APPLY', message, options);
  }
}
