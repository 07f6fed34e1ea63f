/** An agent whose installer and every step is one A/B hook (hardware/raspberry-pi/hooks/), in a lab host. */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { NetLab } from '../../scripts/lab/netlab.js';
import { FWCAST_AGENT, track, waitForEvent, type Tracked } from './processes.js';

/**
 * Writes DIR/agent.json: model rpi4 on eth0, trusting DIR/publisher.pub, with
 * `hook` as installer, activate, commit and rollback, and as health with
 * `appHealth` (the application's own check) in FWCAST_HEALTH_COMMAND.
 */
export function hookAgentConfig(dir: string, hook: string, appHealth: string, timing: { healthTimeoutSeconds: number; healthIntervalSeconds: number }): string {
  const config = join(dir, 'agent.json');
  writeFileSync(config, JSON.stringify({
    interface: 'eth0', store: join(dir, 'store'), trustedKeys: [join(dir, 'publisher.pub')],
    models: [{
      model: 'rpi4',
      installer: { type: 'command', command: hook },
      steps: { activate: hook, health: `FWCAST_HEALTH_COMMAND='${appHealth}' ${hook}`, commit: hook, rollback: hook, ...timing },
    }],
  }));
  return config;
}

/** Starts the agent on lab host `dev` with `env`; resolves once it listens. */
export async function startHookedAgent(lab: NetLab, config: string, env: NodeJS.ProcessEnv): Promise<Tracked> {
  const agent = track(lab.spawn('dev', process.execPath, [FWCAST_AGENT, '--config', config, '--log-format', 'json'], { env }));
  await waitForEvent(agent, 'agent.listening', { model: 'rpi4' }, 30_000);
  return agent;
}
