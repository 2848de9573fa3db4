import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/**
 * The HTTP API runs as its own process (apps import packages, never each other): this starts
 * `@facefleet/api`'s entry point with the same environment, its output on our stderr.
 */
export function spawnApi(options: {
  port?: number;
  host?: string;
  logLevel?: string;
}): ChildProcess {
  const main = fileURLToPath(import.meta.resolve('@facefleet/api/main'));
  const args = [main];
  if (options.port !== undefined) args.push('--port', String(options.port));
  if (options.host) args.push('--host', options.host);
  if (options.logLevel) args.push('--log-level', options.logLevel);
  // The IPC channel is the API's lifeline: when this process dies, the API sees it close and stops.
  return spawn(process.execPath, args, { stdio: ['ignore', 2, 'inherit', 'ipc'] });
}

/** Resolves with the process's exit code (1 when a signal ended it). */
export function exited(child: ChildProcess): Promise<number> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code ?? 1)));
}
