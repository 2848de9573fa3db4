import cliProgress from 'cli-progress';

/**
 * A progress bar on stderr with rate and ETA, shown only when stderr is a terminal. The total may
 * be unknown at first (a walk still being counted): then the bar shows count and rate, no ETA.
 */
export class Progress {
  private readonly bar: cliProgress.SingleBar | undefined;
  private readonly started = performance.now();
  private done = 0;

  constructor(total: number | undefined, unit = 'images') {
    if (!process.stderr.isTTY) return;

    this.bar = new cliProgress.SingleBar(
      {
        stream: process.stderr,
        format: `{bar} {value}/{total} ${unit} | {rate}/s | {note} | ETA {eta_formatted}`,
        hideCursor: true,
        etaBuffer: 50,
      },
      cliProgress.Presets.shades_classic,
    );
    this.bar.start(total ?? 0, 0, { rate: '0.0', note: '' });
  }

  setTotal(total: number): void {
    this.bar?.setTotal(total);
  }

  tick(count = 1, note = ''): void {
    this.done += count;
    const seconds = (performance.now() - this.started) / 1000;
    this.bar?.increment(count, { rate: (this.done / seconds).toFixed(1), note });
  }

  stop(): void {
    this.bar?.stop();
  }
}

/** "1 image", "2 images"; "1 process", "2 processes" with the plural given. */
export function plural(count: number, noun: string, nouns = `${noun}s`): string {
  return `${count} ${count === 1 ? noun : nouns}`;
}
