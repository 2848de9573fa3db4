import {
  appendFileSync,
  closeSync,
  existsSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import {
  ERRORS,
  groupOf,
  ImageStatusSchema,
  type ImageResult,
  type ImageStatus,
} from '@facefleet/protocol';

export const STATUS_FILE = '_status.jsonl';
const LOCK_FILE = '.facefleet.lock';

/** Another live process writes this folder: two writers would break exactly-once output. */
export class FolderBusyError extends Error {
  override name = 'FolderBusyError';
}

export interface OutputFolderOptions {
  /** Overrides the default group rule (see groupOf). */
  readonly groupPattern?: RegExp;
}

/**
 * An output folder: face records appended to `<group>.json`, one status line per image to
 * `_status.jsonl`. Its owner is the only writer (embed's parent process, or the fleet's sink).
 *
 * Exactly-once output across crashes rests on one ordering: an image's face records are written
 * before its status line, and the status line marks it done. On reopening, a torn last status
 * line is cut off, and a group file is cut back to the records its done images account for
 * (records past that belong to an image that never got its status and will be processed again).
 */
export class OutputFolder {
  /** The last status written for each job key. */
  private readonly done = new Map<string, ImageStatus>();
  /** Face records per group that the status file accounts for. */
  private readonly expected = new Map<string, number>();
  private readonly checked = new Set<string>();

  private constructor(
    readonly dir: string,
    private readonly options: OutputFolderOptions,
  ) {}

  /** Opens (creating) the folder and takes its writer's lock; `close` gives the lock back. */
  static open(dir: string, options: OutputFolderOptions = {}): OutputFolder {
    mkdirSync(dir, { recursive: true });
    takeLock(dir);
    const folder = new OutputFolder(dir, options);
    folder.loadStatuses();
    return folder;
  }

  close(): void {
    rmSync(join(this.dir, LOCK_FILE), { force: true });
  }

  /** Images already written, by job key. */
  get size(): number {
    return this.done.size;
  }

  has(key: string): boolean {
    return this.done.has(key);
  }

  /**
   * Whether an image needs no processing again: it has a status, and that status is not a failure
   * that a retry could mend (a retryable code, or any failure when `retryFailed`).
   */
  isDone(key: string, retryFailed = false): boolean {
    const last = this.done.get(key);
    if (!last) return false;
    if (last.status !== 'failed') return true;

    const code = last.error?.code as keyof typeof ERRORS | undefined;
    return !(retryFailed || (code !== undefined && ERRORS[code]?.retryable));
  }

  groupFor(id: string | number, explicit?: string): string {
    return explicit ?? groupOf(id, this.options.groupPattern);
  }

  /**
   * Writes one image's records, then its status, and returns true. A result for a key already
   * written is skipped (false), except that a success may follow a failure: the later line wins.
   */
  write(result: ImageResult, explicitGroup?: string): boolean {
    const key = result.status.key;
    const last = key === undefined ? undefined : this.done.get(key);
    if (last && (last.status !== 'failed' || result.status.status === 'failed')) return false;

    const group = this.groupFor(result.status.id, explicitGroup);
    if (result.records.length > 0) {
      this.repairGroup(group);
      appendFileSync(
        this.groupPath(group),
        result.records.map((r) => `${JSON.stringify(r)}\n`).join(''),
      );
    }
    appendFileSync(join(this.dir, STATUS_FILE), `${JSON.stringify({ ...result.status, group })}\n`);

    if (key !== undefined) this.done.set(key, result.status);
    this.expected.set(group, (this.expected.get(group) ?? 0) + result.records.length);
    return true;
  }

  private groupPath(group: string): string {
    return join(this.dir, `${group}.json`);
  }

  private loadStatuses(): void {
    const path = join(this.dir, STATUS_FILE);
    if (!existsSync(path)) return;

    const text = readFileSync(path, 'utf8');
    const complete = text.lastIndexOf('\n') + 1;
    if (complete < text.length) truncateTo(path, Buffer.byteLength(text.slice(0, complete)));

    for (const line of text.slice(0, complete).split('\n')) {
      if (line.trim() === '') continue;

      const status = ImageStatusSchema.parse(JSON.parse(line));
      const group = status.group ?? this.groupFor(status.id);
      if (status.key !== undefined) this.done.set(status.key, status);
      this.expected.set(
        group,
        (this.expected.get(group) ?? 0) + (status.status === 'ok' ? status.faces : 0),
      );
    }
  }

  /** Before the first append to a group in this run, cut off records no status accounts for. */
  private repairGroup(group: string): void {
    if (this.checked.has(group)) return;
    this.checked.add(group);

    const path = this.groupPath(group);
    if (!existsSync(path)) return;
    const keep = offsetAfterLines(path, this.expected.get(group) ?? 0);
    if (keep < statSync(path).size) truncateTo(path, keep);
  }
}

/** The byte offset just past the n-th newline, or past the last one if the file has fewer. */
function offsetAfterLines(path: string, lines: number): number {
  if (lines === 0) return 0;

  const fd = openSync(path, 'r');
  try {
    const chunk = Buffer.alloc(1 << 20);
    let offset = 0;
    let seen = 0;
    let lastLineEnd = 0;
    for (;;) {
      const read = readSync(fd, chunk, 0, chunk.length, offset);
      if (read === 0) return lastLineEnd;

      for (let i = 0; i < read; i += 1) {
        if (chunk[i] !== 10) continue;
        lastLineEnd = offset + i + 1;
        if (++seen === lines) return lastLineEnd;
      }
      offset += read;
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * One writer per folder, held by a lock file naming its process. A lock left by a process that
 * is gone (killed, crashed) is taken over; one held by a live process on this host is refused.
 */
function takeLock(dir: string): void {
  const path = join(dir, LOCK_FILE);
  const mine = `${process.pid}@${hostname()}`;
  try {
    writeFileSync(path, mine, { flag: 'wx' });
    return;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }

  const holder = readFileSync(path, 'utf8').trim();
  const [pid, host] = holder.split('@');
  if (holder !== mine && host === hostname() && isAlive(Number(pid))) {
    throw new FolderBusyError(
      `${dir} is being written by process ${pid}; one writer per output folder`,
    );
  }
  writeFileSync(path, mine);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A killed process that its parent has not reaped yet (a zombie) still answers signal 0.
  try {
    return !/^\d+ \(.*\) Z /s.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

function truncateTo(path: string, size: number): void {
  const fd = openSync(path, 'r+');
  try {
    ftruncateSync(fd, size);
  } finally {
    closeSync(fd);
  }
}
