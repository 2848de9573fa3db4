import { availableParallelism } from 'node:os';
import { Command, CommanderError, Option } from 'commander';
import { BACKENDS, DETECTORS, ModelError } from '@facefleet/engine';
import { embed } from './commands/embed.js';
import { enqueue, serve, sink, status, up, worker } from './commands/fleet.js';
import { modelsInstall, modelsVerify } from './commands/models.js';
import { PathNotFoundError } from '@facefleet/fleet';
import { UsageError } from './usage.js';

/** Exit codes: 0 every image handled, 1 nothing could run, 2 usage error, 130 interrupted. */
const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;

const program = new Command('facefleet')
  .description('Find every face in images and describe each with a 128-number embedding (JSON-NL).')
  .version('0.1.0')
  .showHelpAfterError()
  .exitOverride();

program
  .command('embed')
  .description('embed the faces of image files and folders (walked recursively), without Redis')
  .argument('<paths...>', 'image files and directories')
  .option(
    '-o, --out <dir>',
    'write <group>.json files and _status.jsonl here (resumable) instead of stdout',
  )
  .option(
    '-g, --group <regex>',
    'group rule: first capture group (or whole match) of the id names the output file',
  )
  .option('-w, --workers <n>', 'inference processes', String(availableParallelism()))
  .option('-c, --min-confidence <x>', 'minimum detector score, 0..1', '0.5')
  .addOption(
    new Option('--detector <name>', 'face detector: ssd (accurate) or tiny (faster, misses more)')
      .choices(DETECTORS)
      .default('ssd'),
  )
  .option('--threads <n>', 'onnx backend: threads per inference process', '1')
  .option('--aligned', 'take each image as one aligned face chip (no detection)')
  .addOption(new Option('--backend <name>', 'inference backend').choices(BACKENDS).default('auto'))
  .option('--max-pixels <n>', 'refuse images with more pixels than this', '100000000')
  .option(
    '--max-jobs-per-process <n>',
    'recycle an inference process after n images (0 = never)',
    '0',
  )
  .option('--retry-failed', 'with --out: process again the images whose last status is failed')
  .option('--log-level <level>', 'fatal, error, warn, info, debug or silent', 'info')
  .action(async (paths: string[], options: Record<string, unknown>) => {
    process.exitCode = await embed(paths, options);
  });

program
  .command('enqueue')
  .description(
    'put image jobs into the Redis queue (REDIS_URL), in bulk; the same image is never queued twice',
  )
  .argument('[paths...]', 'image files and directories (walked recursively)')
  .option('-l, --list <file>', 'also take one path or URL per line from this file (- for stdin)')
  .option('-g, --group <regex>', 'group rule applied at enqueue (else the sink applies its own)')
  .option(
    '-p, --priority <n>',
    'BullMQ priority, 1 (highest) to 2097152; default: plain FIFO, behind interactive calls',
  )
  .option('--batch <n>', 'jobs per round trip to Redis', '500')
  .action(async (paths: string[], options: Record<string, unknown>) => {
    process.exitCode = await enqueue(paths, options);
  });

withWorkerOptions(
  program
    .command('worker')
    .description(
      'consume image jobs from Redis with N inference processes that keep the models loaded',
    )
    .option('-c, --concurrency <n>', 'inference processes', String(availableParallelism())),
).action(async (options: Record<string, unknown>) => {
  process.exitCode = await worker(options);
});

program
  .command('sink')
  .description('write results from Redis into an output folder: the single writer of its files')
  .requiredOption('-o, --out <dir>', 'output folder: <group>.json files and _status.jsonl')
  .option('-g, --group <regex>', 'group rule for results that carry no group')
  .option('--log-level <level>', 'fatal, error, warn, info, debug or silent', 'info')
  .action(async (options: Record<string, unknown>) => {
    process.exitCode = await sink(options);
  });

const upCommand = program
  .command('up')
  .description("one machine's whole fleet: Redis (started if none answers), workers and the sink")
  .option('-w, --workers <n>', 'inference processes', String(availableParallelism()))
  .option('-o, --out <dir>', 'output folder', 'facefleet-out')
  .option('-g, --group <regex>', 'group rule for results that carry no group')
  .option('--port <n>', 'HTTP API port', '8088')
  .option('--host <addr>', 'HTTP API address', '127.0.0.1')
  .option('--no-api', 'do not start the HTTP API');
withWorkerOptions(upCommand).action(async (options: Record<string, unknown>) => {
  process.exitCode = await up(options);
});

program
  .command('serve')
  .description(
    'the HTTP API: POST /faceembed (seed-compatible), /v1/jobs, /admin/queues, /healthz, /readyz, /metrics',
  )
  .option('--port <n>', 'port', '8088')
  .option('--host <addr>', 'address to listen on (0.0.0.0 for all)', '127.0.0.1')
  .option('--log-level <level>', 'fatal, error, warn, info, debug or silent', 'info')
  .action(async (options: Record<string, unknown>) => {
    process.exitCode = await serve(options);
  });

program
  .command('status')
  .description('jobs per queue and state, workers alive, throughput of the last minute')
  .option('--json', 'one JSON line instead of text')
  .action(async (options: { json?: boolean }) => {
    process.exitCode = await status(options);
  });

const models = program.command('models').description('the model weights in models/');
models
  .command('install')
  .description(
    'copy the pinned weights from @vladmandic/face-api into models/, checking each sha256',
  )
  .option('--dir <dir>', 'models directory')
  .action(async (options: { dir?: string }) => {
    process.exitCode = await modelsInstall(options.dir);
  });
models
  .command('verify')
  .description('check every model file against its sha256 in the manifest')
  .option('--dir <dir>', 'models directory')
  .action(async (options: { dir?: string }) => {
    process.exitCode = await modelsVerify(options.dir);
  });

/** The options of everything that runs inference: `worker` and `up`. */
function withWorkerOptions(command: Command): Command {
  return command
    .option(
      '--max-jobs-per-process <n>',
      'recycle an inference process after n images (0 = never)',
      '0',
    )
    .addOption(
      new Option('--backend <name>', 'inference backend').choices(BACKENDS).default('auto'),
    )
    .option('--min-confidence <x>', 'minimum detector score when a job does not say', '0.5')
    .addOption(
      new Option('--detector <name>', 'face detector: ssd (accurate) or tiny (faster, misses more)')
        .choices(DETECTORS)
        .default('ssd'),
    )
    .option('--threads <n>', 'onnx backend: threads per inference process', '1')
    .option(
      '--autoscale <min..max>',
      'inference processes follow the backlog between these bounds (overrides the fixed count)',
    )
    .option(
      '--backlog-per-process <n>',
      'with --autoscale: waiting jobs per busy process that add processes',
      '2',
    )
    .option(
      '--scale-up-after <duration>',
      'with --autoscale: how long that backlog lasts first',
      '2s',
    )
    .option(
      '--scale-down-after <duration>',
      'with --autoscale: quiet time (nothing waiting, a process idle) before processes retire',
      '60s',
    )
    .option('--lock-ms <ms>', 'job lock duration and stalled-check interval (default 30000)')
    .option('--url-timeout-ms <ms>', 'total time allowed to fetch one URL', '30000')
    .option('--log-level <level>', 'fatal, error, warn, info, debug or silent', 'info');
}

try {
  await program.parseAsync(process.argv);
} catch (error) {
  process.exitCode = exitCodeFor(error);
}

function exitCodeFor(error: unknown): number {
  if (error instanceof CommanderError) {
    return error.exitCode === 0 ? 0 : EXIT_USAGE;
  }
  if (error instanceof UsageError || error instanceof PathNotFoundError) {
    process.stderr.write(`facefleet: ${error.message}\n`);
    return EXIT_USAGE;
  }
  if (error instanceof ModelError) {
    process.stderr.write(`facefleet: ${error.message}\n`);
    return EXIT_FAILURE;
  }
  process.stderr.write(`facefleet: ${error instanceof Error ? error.message : String(error)}\n`);
  return EXIT_FAILURE;
}
