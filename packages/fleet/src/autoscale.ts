import { z } from 'zod';
import { parseSettings } from '@facefleet/protocol';

export const AutoscaleSchema = z
  .object({
    /** Fewest inference processes: the size when the queue is quiet. */
    min: z.number().int().min(1).max(256),
    /** Most inference processes: the size under a long backlog. */
    max: z.number().int().min(1).max(256),
    /** Waiting jobs per process at which, with every process busy, another one is started. */
    upPerProcess: z.number().min(0.1).max(10_000).default(2),
    /** How long that pressure must last before processes are added (filters out short bursts). */
    scaleUpAfterMs: z.number().int().min(0).max(3_600_000).default(2_000),
    /** How long the queue must stay empty with a process idle before processes are retired. */
    scaleDownAfterMs: z.number().int().min(0).max(86_400_000).default(60_000),
    /** How often the backlog is read from Redis. */
    intervalMs: z.number().int().min(100).max(60_000).default(1_000),
  })
  .strict()
  .refine((a) => a.min <= a.max, { message: 'the minimum is above the maximum', path: ['min'] });

export type AutoscaleConfig = z.output<typeof AutoscaleSchema>;
export type AutoscaleInput = z.input<typeof AutoscaleSchema>;

export function autoscaleConfig(input: AutoscaleInput): AutoscaleConfig {
  return parseSettings(AutoscaleSchema, input, 'autoscale settings', 'facefleet worker --help');
}

/** What the autoscaler sees at one tick. */
export interface ScaleSample {
  /** Milliseconds, from any monotonic clock. */
  readonly at: number;
  /** Jobs waiting in Redis for any worker (waiting + prioritized). */
  readonly backlog: number;
  /** Inference processes on this machine, starting ones included. */
  readonly size: number;
  /** Of those, how many hold a job. */
  readonly busy: number;
}

export interface ScaleDecision {
  readonly from: number;
  readonly to: number;
  /** `up` for the backlog, `down` for quiet, `min` to restore the minimum. */
  readonly why: 'up' | 'down' | 'min';
  /** How long the condition held, in ms. */
  readonly heldMs: number;
  readonly reason: string;
}

/**
 * The rules, kept apart from processes and Redis so that they read in one place:
 * - below the minimum (a process could not be replaced): back to the minimum;
 * - up: when every process is busy and at least `upPerProcess` jobs per process wait, for
 *   `scaleUpAfterMs`, to as many processes as the backlog asks for, at most twice the current
 *   count and never above `max`;
 * - down: when nothing waits and at least one process has been idle for all of
 *   `scaleDownAfterMs`, to the most processes that were busy at once in that time, never below
 *   `min`.
 */
export class ScalePolicy {
  private pressureSince: number | undefined;
  private quietSince: number | undefined;
  private peakBusy = 0;

  constructor(readonly config: AutoscaleConfig) {}

  decide(sample: ScaleSample): ScaleDecision | undefined {
    const { min, max, upPerProcess, scaleUpAfterMs, scaleDownAfterMs } = this.config;
    const { at, backlog, size, busy } = sample;

    if (size < min) {
      this.reset();
      return { from: size, to: min, why: 'min', heldMs: 0, reason: 'below the minimum' };
    }

    const pressed = busy >= size && backlog >= upPerProcess * size;
    this.pressureSince = pressed ? (this.pressureSince ?? at) : undefined;
    if (pressed && size < max && at - this.pressureSince! >= scaleUpAfterMs) {
      const wanted = Math.ceil(backlog / upPerProcess);
      const to = Math.min(max, Math.max(size + 1, Math.min(wanted, size * 2)));
      const heldMs = Math.round(at - this.pressureSince!);
      this.reset();
      return {
        from: size,
        to,
        why: 'up',
        heldMs,
        reason: `backlog: ${backlog} jobs waiting, ${round(backlog / size)} per process, all ${size} busy for ${heldMs} ms`,
      };
    }

    const quiet = backlog === 0 && busy < size;
    if (!quiet) {
      this.quietSince = undefined;
      return undefined;
    }
    if (this.quietSince === undefined) {
      this.quietSince = at;
      this.peakBusy = busy;
    }
    this.peakBusy = Math.max(this.peakBusy, busy);
    const quietMs = Math.round(at - this.quietSince);
    const to = Math.max(min, this.peakBusy);
    if (quietMs < scaleDownAfterMs || to >= size) return undefined;

    const peak = this.peakBusy;
    this.quietSince = at;
    this.peakBusy = busy;
    return {
      from: size,
      to,
      why: 'down',
      heldMs: quietMs,
      reason: `quiet: no job waiting for ${quietMs} ms, at most ${peak} of ${size} busy`,
    };
  }

  /** Forgets the pressure and quiet seen so far: called after every change. */
  reset(): void {
    this.pressureSince = undefined;
    this.quietSince = undefined;
    this.peakBusy = 0;
  }
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}
