import cliProgress from 'cli-progress';

/** A progress bar on stderr with rate and ETA, shown only when stderr is a terminal. */
export class Progress {
  private readonly bar: cliProgress.SingleBar | undefined;
  private readonly started = performance.now();
  private done = 0;

  constructor(total: number) {
    if (!process.stderr.isTTY || total === 0) return;

    this.bar = new cliProgress.SingleBar(
      {
        stream: process.stderr,
        format: '{bar} {value}/{total} images | {rate} img/s | {faces} faces | ETA {eta_formatted}',
        hideCursor: true,
        etaBuffer: 50,
      },
      cliProgress.Presets.shades_classic,
    );
    this.bar.start(total, 0, { rate: '0.0', faces: 0 });
  }

  tick(faces: number): void {
    this.done += 1;
    const seconds = (performance.now() - this.started) / 1000;
    this.bar?.increment(1, { rate: (this.done / seconds).toFixed(1), faces });
  }

  stop(): void {
    this.bar?.stop();
  }
}
