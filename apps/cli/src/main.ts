import { availableParallelism } from 'node:os';
import { Command, CommanderError, Option } from 'commander';
import { BACKENDS, ModelError } from '@facefleet/engine';
import { embed } from './commands/embed.js';
import { modelsInstall, modelsVerify } from './commands/models.js';
import { UsageError } from './inputs.js';

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
  .option('-o, --out <dir>', 'write <group>.json files and _status.jsonl here (resumable) instead of stdout')
  .option('-g, --group <regex>', 'group rule: first capture group (or whole match) of the id names the output file')
  .option('-w, --workers <n>', 'inference processes', String(availableParallelism()))
  .option('-c, --min-confidence <x>', 'minimum detector score, 0..1', '0.5')
  .option('--aligned', 'take each image as one aligned face chip (no detection)')
  .addOption(new Option('--backend <name>', 'tfjs backend').choices(BACKENDS).default('auto'))
  .option('--max-pixels <n>', 'refuse images with more pixels than this', '100000000')
  .option('--max-jobs-per-process <n>', 'recycle an inference process after n images (0 = never)', '0')
  .option('--log-level <level>', 'fatal, error, warn, info, debug or silent', 'info')
  .action(async (paths: string[], options: Record<string, unknown>) => {
    process.exitCode = await embed(paths, options);
  });

const models = program.command('models').description('the model weights in models/');
models
  .command('install')
  .description('copy the pinned weights from @vladmandic/face-api into models/, checking each sha256')
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

try {
  await program.parseAsync(process.argv);
} catch (error) {
  process.exitCode = exitCodeFor(error);
}

function exitCodeFor(error: unknown): number {
  if (error instanceof CommanderError) {
    return error.exitCode === 0 ? 0 : EXIT_USAGE;
  }
  if (error instanceof UsageError) {
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
