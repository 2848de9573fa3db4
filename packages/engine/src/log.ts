import { pino, type Logger, type LevelWithSilent } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

/**
 * Logs go to stderr, never stdout: stdout carries JSON-NL face records. On a terminal they are
 * made readable; elsewhere they stay one JSON object per line for log collectors.
 */
export function createLogger(name: string, level: LevelWithSilent = 'info'): Logger {
  const options = { name, level, base: { pid: process.pid } };

  if (process.stderr.isTTY) {
    return pino(options, pretty({ destination: 2, sync: true, ignore: 'hostname' }));
  }
  return pino(options, pino.destination({ dest: 2, sync: true }));
}
