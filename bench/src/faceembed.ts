import { randomBytes } from 'node:crypto';
import { dirname } from 'node:path';
import { facefleet, obliterate, stop, until } from './processes.js';
import { percentile, round } from './stats.js';

export interface LatencyRow {
  readonly clients: number;
  readonly requests: number;
  readonly p50: number;
  readonly p95: number;
}

/**
 * `POST /faceembed` as its callers use it: `facefleet serve` and a `facefleet worker` with two
 * inference processes; each client posts `{"id", "file"}` and waits for its JSON-NL answer before
 * the next. Latency in milliseconds, per request.
 */
export async function benchFaceembed(
  frame: string,
  port: number,
  runs: ReadonlyArray<{ clients: number; requestsPerClient: number }>,
): Promise<LatencyRow[]> {
  const prefix = `bench-${randomBytes(4).toString('hex')}`;
  const env = { FACEFLEET_PREFIX: prefix, FACEFLEET_FILE_ROOTS: dirname(frame) };
  const worker = facefleet(['worker', '--concurrency', '2', '--backend', 'onnx'], env);
  const api = facefleet(['serve', '--port', String(port)], env);
  const url = `http://127.0.0.1:${port}`;
  let ready = false;
  const poll = setInterval(() => {
    fetch(`${url}/readyz`)
      .then((res) => (ready = res.ok))
      .catch(() => undefined);
  }, 200);

  const call = async (): Promise<number> => {
    const started = performance.now();
    const res = await fetch(`${url}/faceembed`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ id: 'bench', file: frame }),
    });
    const body = await res.text();
    if (res.status !== 200 || body.split('\n').filter(Boolean).length !== 1)
      throw new Error(`faceembed answered ${res.status}: ${body.slice(0, 200)}`);
    return performance.now() - started;
  };

  try {
    await until(() => ready, 'the API and a worker to be ready', 120_000);
    clearInterval(poll);
    for (let i = 0; i < 4; i += 1) await call(); // warm-up
    const rows: LatencyRow[] = [];
    for (const { clients, requestsPerClient } of runs) {
      const latencies: number[] = [];
      await Promise.all(
        Array.from({ length: clients }, async () => {
          for (let i = 0; i < requestsPerClient; i += 1) latencies.push(await call());
        }),
      );
      rows.push({
        clients,
        requests: latencies.length,
        p50: round(percentile(latencies, 50), 1),
        p95: round(percentile(latencies, 95), 1),
      });
    }
    return rows;
  } catch (error) {
    process.stderr.write(`worker log:\n${worker.log()}\napi log:\n${api.log()}\n`);
    throw error;
  } finally {
    clearInterval(poll);
    await Promise.all([stop(worker), stop(api)]);
    await obliterate(prefix);
  }
}
