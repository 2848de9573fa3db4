import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { statusBase, type ImageResult, type Job } from '@facefleet/protocol';
import type { BackendInfo } from './backend.js';
import type { EngineConfigInput } from './config.js';
import { ENGINE_CONFIG_ENV, type FromChild, type ToChild } from './ipc.js';
import type { Logger } from './log.js';

export interface PoolOptions {
  /** Inference processes to run; each loads the models once. */
  readonly processes: number;
  readonly engine: EngineConfigInput;
  /** Replace a process after this many jobs, to bound memory. 0 = never. */
  readonly maxJobsPerProcess?: number;
  readonly logger: Logger;
  readonly logLevel?: string;
}

/** One image's result, with the process that made it, its live tensors and resident memory after. */
export interface PoolOutcome {
  readonly result: ImageResult;
  readonly pid: number;
  readonly tensors: number;
  readonly rss: number;
}

interface Task {
  readonly seq: number;
  readonly job: Job;
  readonly key: string | undefined;
  attempts: number;
  /** A caller waits for it: it goes before the bulk jobs queued here. */
  readonly urgent?: boolean;
  resolve(outcome: PoolOutcome): void;
}

interface Slot {
  readonly child: ChildProcess;
  ready: boolean;
  /** The jobs sent to the process and not yet answered, in the order they were sent. */
  readonly tasks: Task[];
  /** The one of them the process is working on; the others wait inside it. */
  running: Task | undefined;
  /** Jobs answered. */
  jobs: number;
  retiring: boolean;
}

/** A job that was in a process that died is tried once more in another, then failed. */
const MAX_ATTEMPTS = 2;

/**
 * Jobs a process holds: the one it runs and the next, so that it starts the next the moment it
 * has sent a result instead of idling while the result travels to the caller and a new job comes
 * back (a millisecond or more per image on a loaded machine). A job for a waiting caller may be a
 * third, and goes first.
 */
const DEPTH = 2;

const CHILD = fileURLToPath(new URL('./child.js', import.meta.url));

/**
 * N inference processes with the models resident, each holding up to DEPTH jobs that it runs one
 * at a time. A process that crashes is replaced and the job it was running retried elsewhere (the
 * ones waiting in it go back to the queue as they were); a process can be recycled after N jobs.
 */
export class EnginePool {
  private readonly slots = new Set<Slot>();
  private readonly queue: Task[] = [];
  private seq = 0;
  private closing = false;
  private backendInfo: BackendInfo | undefined;
  /** Processes that died without being asked to. */
  crashes = 0;

  private constructor(private readonly options: PoolOptions) {}

  /** Starts every process and waits until all have loaded their models. */
  static async start(options: PoolOptions): Promise<EnginePool> {
    const pool = new EnginePool(options);
    try {
      await Promise.all(Array.from({ length: Math.max(1, options.processes) }, () => pool.spawn()));
    } catch (error) {
      await pool.close();
      throw error;
    }
    return pool;
  }

  get backend(): BackendInfo {
    if (!this.backendInfo) throw new Error('the pool has not started');
    return this.backendInfo;
  }

  /** Processes that serve jobs, started or starting; those being retired are not counted. */
  get size(): number {
    let n = 0;
    for (const slot of this.slots) if (!slot.retiring) n += 1;
    return n;
  }

  /** Processes working on a job right now. */
  get busy(): number {
    let n = 0;
    for (const slot of this.slots) if (slot.running) n += 1;
    return n;
  }

  /** Jobs handed to the pool that wait for a free process. */
  get queued(): number {
    return this.queue.length;
  }

  /**
   * Starts `count` more processes and resolves once they have loaded their models; rejects if one
   * cannot start (the others keep running).
   */
  async grow(count: number): Promise<void> {
    if (this.closing) throw new Error('the engine pool is closed');
    await Promise.all(Array.from({ length: Math.max(0, count) }, () => this.spawn()));
  }

  /**
   * Retires up to `count` processes, never the last one, and resolves when they have exited. Idle
   * processes go first, then ones still loading, then busy ones; a busy process takes no new job
   * and leaves once it has answered the ones it holds, so no job is ever cut short. Answers how
   * many it retired.
   */
  async shrink(count: number): Promise<number> {
    const rank = (slot: Slot) => (slot.tasks.length > 0 ? 2 : slot.ready ? 0 : 1);
    const chosen = [...this.slots]
      .filter((slot) => !slot.retiring)
      .sort((a, b) => rank(a) - rank(b))
      .slice(0, Math.max(0, Math.min(count, this.size - 1)));
    await Promise.all(chosen.map((slot) => this.stopSlot(slot)));
    return chosen.length;
  }

  /**
   * Runs one job in whichever process is free first; an `urgent` one (a caller waits for it) goes
   * before every queued job and every job waiting inside a process. Never rejects for bad input.
   */
  run(job: Job, key?: string, urgent = false): Promise<PoolOutcome> {
    if (this.closing) return Promise.reject(new Error('the engine pool is closed'));

    return new Promise((resolve) => {
      const task: Task = { seq: ++this.seq, job, key, attempts: 0, urgent, resolve };
      // An urgent job goes after the urgent ones already waiting, before every other.
      const at = urgent ? this.queue.findIndex((t) => !t.urgent) : -1;
      this.queue.splice(at < 0 ? this.queue.length : at, 0, task);
      this.dispatch();
    });
  }

  /** Lets running jobs finish, then stops every process. */
  async close(): Promise<void> {
    this.closing = true;
    const exits = [...this.slots].map((slot) => this.stopSlot(slot));
    await Promise.all(exits);
  }

  private spawn(): Promise<void> {
    const child = fork(CHILD, [], {
      // A child's stdout goes to our stderr: our stdout carries nothing but JSON-NL records.
      stdio: ['ignore', 2, 'inherit', 'ipc'],
      // A young generation of 2 MiB semi-spaces instead of 16: the process's objects are
      // small and short-lived (the pixels live outside the JavaScript heap). Measured over 200
      // images: 13 MiB less on onnx, 20 MiB less on wasm, speed the same within noise.
      execArgv: ['--max-semi-space-size=2'],
      env: {
        ...process.env,
        // One job at a time needs few threads: libuv's pool runs its file reads and sharp's
        // decoding, and glibc would give each thread a malloc arena of its own that only grows.
        // Blocks of 1 MiB and more (decoded pixels, ORT's tensors) are mapped and unmapped
        // rather than kept in an arena, so resident memory stays flat (see BENCHMARKS.md).
        UV_THREADPOOL_SIZE: '2',
        MALLOC_ARENA_MAX: '2',
        MALLOC_MMAP_THRESHOLD_: '1048576',
        [ENGINE_CONFIG_ENV]: JSON.stringify(this.options.engine),
        FACEFLEET_LOG_LEVEL: this.options.logLevel ?? 'info',
      },
    });
    const slot: Slot = {
      child,
      ready: false,
      tasks: [],
      running: undefined,
      jobs: 0,
      retiring: false,
    };
    this.slots.add(slot);

    return new Promise((resolve, reject) => {
      child.on('message', (message: FromChild) => {
        if (message.type === 'ready') {
          slot.ready = true;
          this.noteBackend(message.backend);
          resolve();
          // Retired while loading: the stop it was sent came before it listened, so say it again.
          if (slot.retiring) slot.child.send({ type: 'stop' } satisfies ToChild, () => undefined);
          else this.dispatch();
        } else if (message.type === 'fatal') {
          // A process that cannot load its models would fail the same way again: no replacement.
          slot.retiring = true;
          reject(new Error(message.message));
        } else {
          this.finish(slot, message);
        }
      });
      // Sending to a process that has just died fails here; its 'exit' handler does the recovery.
      child.on('error', (error) =>
        this.options.logger.debug(
          { err: error, pid: child.pid },
          'inference process channel error',
        ),
      );
      child.on('exit', (code, signal) => {
        reject(
          new Error(
            `inference process ${child.pid} exited (${signal ?? code}) before it was ready`,
          ),
        );
        this.onExit(slot, code, signal);
      });
    });
  }

  private noteBackend(backend: BackendInfo): void {
    if (this.backendInfo) return;

    this.backendInfo = backend;
    this.options.logger.info(
      { backend, processes: this.options.processes },
      'face engine backend chosen',
    );
  }

  private dispatch(): void {
    while (this.queue.length > 0) {
      const task = this.queue[0] as Task;
      const slot = this.slotFor(task);
      if (!slot) return;

      this.queue.shift();
      slot.tasks.push(task);
      // A process with nothing in hand starts the job as it arrives.
      if (!slot.running) this.start(slot, task);
      const message: ToChild = {
        type: 'job',
        seq: task.seq,
        job: task.job,
        ...(task.key ? { key: task.key } : {}),
        ...(task.urgent ? { urgent: true } : {}),
      };
      slot.child.send(message, (error) => {
        if (error)
          this.options.logger.debug(
            { err: error, pid: slot.child.pid },
            'job not sent; the process is gone',
          );
      });
    }
  }

  /**
   * The process that should take `task`: the one holding the fewest jobs, if it has room. An
   * urgent job may be one more than DEPTH, once per process: it waits only for the running job.
   */
  private slotFor(task: Task): Slot | undefined {
    const limit = this.options.maxJobsPerProcess ?? 0;
    let best: Slot | undefined;
    for (const slot of this.slots) {
      if (!slot.ready || slot.retiring) continue;
      const held = slot.tasks.length;
      // A process about to be recycled takes no more than it has left to do.
      if (limit > 0 && slot.jobs + held >= limit) continue;
      const room =
        held < DEPTH ||
        (task.urgent === true && held === DEPTH && !slot.tasks.some((t) => t.urgent));
      if (room && (!best || held < best.tasks.length)) best = slot;
    }
    return best;
  }

  private start(slot: Slot, task: Task): void {
    slot.running = task;
    task.attempts += 1;
  }

  private finish(slot: Slot, message: Extract<FromChild, { type: 'result' }>): void {
    const at = slot.tasks.findIndex((t) => t.seq === message.seq);
    if (at < 0) return;

    const [task] = slot.tasks.splice(at, 1) as [Task];
    // The process says which job it took up next. None: it went idle, so the first of those
    // still on their way to it starts as it arrives.
    const next =
      message.next === undefined ? slot.tasks[0] : slot.tasks.find((t) => t.seq === message.next);
    slot.running = undefined;
    if (next) this.start(slot, next);
    slot.jobs += 1;
    task.resolve({
      result: message.result,
      pid: slot.child.pid ?? 0,
      tensors: message.tensors,
      rss: message.rss,
    });

    const limit = this.options.maxJobsPerProcess ?? 0;
    if (limit > 0 && slot.jobs >= limit && !this.closing) {
      void this.stopSlot(slot);
      this.respawn();
    }
    this.dispatch();
  }

  private onExit(slot: Slot, code: number | null, signal: string | null): void {
    this.slots.delete(slot);
    const { running } = slot;
    const waiting = slot.tasks.filter((t) => t !== running);
    slot.tasks.length = 0;
    slot.running = undefined;
    // Asked to stop, and it left with nothing in hand: the normal end of a process.
    if (slot.retiring && !running && waiting.length === 0) return;

    this.crashes += 1;
    const replace = !slot.retiring && !this.closing;
    this.options.logger.warn(
      { pid: slot.child.pid, code, signal },
      replace ? 'inference process died; starting another' : 'inference process died',
    );
    // The jobs that waited inside it were never started: back to the queue, uncharged, in front.
    this.queue.unshift(...waiting);
    if (running) {
      if (running.attempts < MAX_ATTEMPTS) this.queue.unshift(running);
      else
        running.resolve({
          result: crashed(running),
          pid: slot.child.pid ?? 0,
          tensors: -1,
          rss: 0,
        });
    }
    if (replace) this.respawn();
    else this.dispatch();
  }

  private respawn(): void {
    this.spawn().catch((error: unknown) => {
      this.options.logger.error({ err: error }, 'cannot start an inference process');
      if (this.slots.size === 0) this.failQueued(String(error));
    });
  }

  private failQueued(reason: string): void {
    for (const task of this.queue.splice(0)) {
      const result = crashed(task);
      result.status.error = {
        code: 'INTERNAL',
        message: `no inference process can start: ${reason}`,
      };
      task.resolve({ result, pid: 0, tensors: -1, rss: 0 });
    }
  }

  private stopSlot(slot: Slot): Promise<void> {
    slot.retiring = true;
    if (slot.child.exitCode !== null || slot.child.signalCode !== null) return Promise.resolve();

    return new Promise((resolve) => {
      slot.child.once('exit', () => resolve());
      // A child on its way out may already have closed its channel: then a signal does the job.
      if (!slot.child.connected) slot.child.kill('SIGTERM');
      else
        slot.child.send(
          { type: 'stop' } satisfies ToChild,
          (error) => error && slot.child.kill('SIGTERM'),
        );
    });
  }
}

function crashed(task: Task): ImageResult {
  const message = `the inference process died ${task.attempts} times while processing this image`;
  return {
    status: {
      ...statusBase(task.job, task.key),
      status: 'failed',
      faces: 0,
      error: { code: 'WORKER_CRASHED', message },
    },
    records: [],
  };
}
