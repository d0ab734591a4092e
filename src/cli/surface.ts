import type { Command } from 'commander';
import { apiCommand } from './api.js';
import { backupCommand } from './backup.js';
import { jobsCommand } from './jobs.js';
import { policyCommand } from './policy.js';
import { registerCommand } from './register.js';
import { restoreCommand } from './restore.js';
import { statusCommand } from './status.js';
import { vcenterCommand } from './vcenter.js';

/** The manager-facing and operator commands: api, status, register, vcenter, policy, jobs, backup, restore. */
export function registerSurfaceCommands(program: Command): void {
  for (const c of [
    apiCommand(),
    statusCommand(),
    registerCommand(),
    vcenterCommand(),
    policyCommand(),
    jobsCommand(),
    backupCommand(),
    restoreCommand(),
  ]) {
    program.addCommand(c);
    inherit(c, program);
  }
}

/** addCommand does not copy the parent's settings (exitOverride: usage errors exit 2); do it for the whole subtree. */
function inherit(cmd: Command, parent: Command): void {
  cmd.copyInheritedSettings(parent);
  for (const sub of cmd.commands) inherit(sub, cmd);
}
