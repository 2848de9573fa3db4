import { open } from 'node:fs/promises';
import type { ReadableStreamReadResult } from 'node:stream/web';
import type { ImageSource } from '@facefleet/protocol';
import type { EngineConfig } from './config.js';
import { fetch as undiciFetch, type Response as UndiciResponse } from 'undici';
import { FaceFleetError } from './errors.js';
import { forbidden, isForbidden, type UrlPolicy } from './url-policy.js';

type SourceLimits = Pick<EngineConfig, 'maxBytes' | 'urlTimeoutMs' | 'maxRedirects'> & {
  readonly urlPolicy: UrlPolicy;
};

/** The bytes of an image, from a path, an http(s) URL or base64 data, within the byte limit. */
export async function readSource(source: ImageSource, limits: SourceLimits): Promise<Buffer> {
  if ('file' in source) return readFileLimited(source.file, limits.maxBytes);
  if ('url' in source) return fetchLimited(source.url, limits);
  return decodeBase64(source.data, limits.maxBytes);
}

async function readFileLimited(path: string, maxBytes: number): Promise<Buffer> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (error) {
    throw fileError(path, error);
  }

  try {
    const stat = await handle.stat();
    if (!stat.isFile()) throw new FaceFleetError('FILE_UNREADABLE', `not a regular file: ${path}`);
    if (stat.size > maxBytes) {
      throw new FaceFleetError(
        'FILE_TOO_LARGE',
        `${path} has ${stat.size} bytes, over the limit of ${maxBytes}`,
      );
    }
    return await handle.readFile();
  } catch (error) {
    throw fileError(path, error);
  } finally {
    await handle.close();
  }
}

function fileError(path: string, error: unknown): FaceFleetError {
  if (error instanceof FaceFleetError) return error;

  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'ENOTDIR') {
    return new FaceFleetError('FILE_NOT_FOUND', `no such file: ${path}`);
  }
  return new FaceFleetError('FILE_UNREADABLE', `cannot read ${path}: ${code ?? String(error)}`);
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** Content types that are certainly not images: refused before a byte of the body is read. */
const NOT_IMAGE =
  /^(text\/|application\/(json|xml|xhtml|javascript|pdf|x-www-form-urlencoded)|image\/svg)/i;

async function fetchLimited(url: string, limits: SourceLimits): Promise<Buffer> {
  const current = URL.canParse(url) ? new URL(url) : undefined;
  if (!current) throw new FaceFleetError('URL_INVALID', `not a URL: ${url.slice(0, 200)}`);

  const signal = AbortSignal.timeout(limits.urlTimeoutMs);
  try {
    return await follow(current, url, limits, signal);
  } catch (error) {
    if (error instanceof FaceFleetError) throw error;
    if (signal.aborted)
      throw new FaceFleetError(
        'URL_TIMEOUT',
        `${url} did not answer in full within ${limits.urlTimeoutMs} ms`,
      );
    throw new FaceFleetError('URL_FETCH_FAILED', `cannot read ${url}: ${(error as Error).message}`);
  }
}

/** Fetches a URL, following redirects itself so that every hop passes the address policy. */
async function follow(
  start: URL,
  url: string,
  limits: SourceLimits,
  signal: AbortSignal,
): Promise<Buffer> {
  let current = start;
  for (let redirects = 0; ; redirects += 1) {
    limits.urlPolicy.check(current);
    const response = await request(current, limits, signal);
    if (!REDIRECTS.has(response.status))
      return readResponse(response, current.href, limits.maxBytes);

    await response.body?.cancel();
    const location = response.headers.get('location');
    if (!location || !URL.canParse(location, current.href)) {
      throw new FaceFleetError(
        'URL_HTTP_ERROR',
        `${current.href} redirects without a usable Location`,
      );
    }
    if (redirects >= limits.maxRedirects) {
      throw new FaceFleetError(
        'URL_TOO_MANY_REDIRECTS',
        `${url} redirects more than ${limits.maxRedirects} times`,
      );
    }
    current = new URL(location, current.href);
  }
}

async function request(url: URL, limits: SourceLimits, signal: AbortSignal) {
  try {
    return await undiciFetch(url.href, {
      dispatcher: limits.urlPolicy.agent,
      redirect: 'manual',
      signal,
    });
  } catch (error) {
    if (isForbidden(error)) throw forbidden(url.hostname);
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    if (signal.aborted || cause?.code === 'UND_ERR_CONNECT_TIMEOUT') {
      throw new FaceFleetError(
        'URL_TIMEOUT',
        `${url.href} did not answer in full within ${limits.urlTimeoutMs} ms`,
      );
    }
    // A name that does not exist stays so; a refused or reset connection, or EAI_AGAIN, may pass.
    if (cause?.code === 'ENOTFOUND')
      throw new FaceFleetError(
        'URL_HOST_UNKNOWN',
        `cannot fetch ${url.href}: ${url.hostname} does not resolve`,
      );
    const reason = cause?.code ?? cause?.message ?? (error as Error).message;
    throw new FaceFleetError('URL_FETCH_FAILED', `cannot fetch ${url.href}: ${reason}`);
  }
}

async function readResponse(
  response: UndiciResponse,
  url: string,
  maxBytes: number,
): Promise<Buffer> {
  if (!response.ok) {
    await response.body?.cancel();
    throw new FaceFleetError('URL_HTTP_ERROR', `${url} answered HTTP ${response.status}`);
  }
  const type = response.headers.get('content-type') ?? '';
  if (NOT_IMAGE.test(type)) {
    await response.body?.cancel();
    throw new FaceFleetError(
      'URL_NOT_IMAGE',
      `${url} answered ${type.split(';')[0]}, not an image`,
    );
  }
  const declared = Number(response.headers.get('content-length') ?? Number.NaN);
  if (declared > maxBytes) {
    await response.body?.cancel();
    throw tooLarge(url, maxBytes);
  }
  return readBodyLimited(response, url, maxBytes);
}

/** Reads the body chunk by chunk so that an oversized answer is cut off, not buffered whole. */
async function readBodyLimited(
  response: UndiciResponse,
  url: string,
  maxBytes: number,
): Promise<Buffer> {
  if (!response.body) return Buffer.alloc(0);

  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = (await reader.read()) as ReadableStreamReadResult<Uint8Array>;
    if (done) break;

    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel();
      throw tooLarge(url, maxBytes);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks, total);
}

function tooLarge(url: string, maxBytes: number): FaceFleetError {
  return new FaceFleetError(
    'URL_TOO_LARGE',
    `${url} sent more than the limit of ${maxBytes} bytes`,
  );
}

const BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/;

function decodeBase64(data: string, maxBytes: number): Buffer {
  // Checked on the encoded length first: decoding a huge string only to refuse it wastes memory.
  if (Math.floor((data.length * 3) / 4) > maxBytes + 3) {
    throw new FaceFleetError(
      'DATA_TOO_LARGE',
      `data decodes to more than the limit of ${maxBytes} bytes`,
    );
  }

  const compact = data.replace(/\s+/g, '');
  if (!BASE64.test(compact) || compact.length % 4 === 1) {
    throw new FaceFleetError('DATA_INVALID_BASE64', 'data is not valid base64');
  }
  const bytes = Buffer.from(
    compact,
    compact.includes('-') || compact.includes('_') ? 'base64url' : 'base64',
  );
  if (bytes.length > maxBytes) {
    throw new FaceFleetError(
      'DATA_TOO_LARGE',
      `data decodes to ${bytes.length} bytes, over the limit of ${maxBytes}`,
    );
  }
  return bytes;
}
