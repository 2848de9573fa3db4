/**
 * The one registry of error codes. Every refusal or failure that facefleet reports carries one of
 * these codes; `docs/errors.md` lists them and a test keeps the two equal.
 */
export interface ErrorSpec {
  /** What went wrong, in words a caller can act on. */
  readonly description: string;
  /** Whether trying the same job again later can succeed. */
  readonly retryable: boolean;
  /** The HTTP status this code maps to when it reaches an HTTP caller. */
  readonly httpStatus: number;
}

export const ERRORS = {
  IMAGE_EMPTY: {
    description: 'The image source holds zero bytes.',
    retryable: false,
    httpStatus: 422,
  },
  IMAGE_UNSUPPORTED: {
    description:
      'The bytes are not an image in a format facefleet reads (JPEG, PNG, WebP, GIF, TIFF, AVIF).',
    retryable: false,
    httpStatus: 415,
  },
  IMAGE_CORRUPT: {
    description: 'The image format was recognised but its data could not be decoded.',
    retryable: false,
    httpStatus: 422,
  },
  IMAGE_TOO_LARGE: {
    description: 'The image declares more pixels than the configured limit (maxPixels).',
    retryable: false,
    httpStatus: 413,
  },
  IMAGE_TRUNCATED: {
    description:
      'Warning, not a failure: the image data ends early; the part that was there was decoded and searched.',
    retryable: false,
    httpStatus: 200,
  },
  FILE_NOT_FOUND: {
    description: 'No file exists at the given path.',
    retryable: false,
    httpStatus: 404,
  },
  FILE_UNREADABLE: {
    description: 'The file exists but cannot be read (permissions, a directory, an I/O error).',
    retryable: false,
    httpStatus: 422,
  },
  FILE_TOO_LARGE: {
    description: 'The file is larger than the configured byte limit (maxBytes).',
    retryable: false,
    httpStatus: 413,
  },
  URL_INVALID: {
    description: 'The URL is malformed or does not use http or https.',
    retryable: false,
    httpStatus: 400,
  },
  URL_FETCH_FAILED: {
    description: 'The URL could not be fetched (DNS, connection refused or reset).',
    retryable: true,
    httpStatus: 502,
  },
  URL_FORBIDDEN: {
    description:
      'The URL points (directly, through DNS or through a redirect) at a loopback, private, link-local or reserved address that FACEFLEET_URL_ALLOW does not exempt.',
    retryable: false,
    httpStatus: 403,
  },
  URL_TOO_MANY_REDIRECTS: {
    description: 'The URL redirects more times than allowed (maxRedirects).',
    retryable: false,
    httpStatus: 422,
  },
  URL_NOT_IMAGE: {
    description:
      'The URL answered with a content type that is not an image (HTML, JSON, text, SVG, PDF).',
    retryable: false,
    httpStatus: 415,
  },
  URL_HOST_UNKNOWN: {
    description: "The URL's host name does not resolve (DNS answers that it does not exist).",
    retryable: false,
    httpStatus: 422,
  },
  URL_TIMEOUT: {
    description: 'The URL did not answer in full within the configured timeout.',
    retryable: true,
    httpStatus: 504,
  },
  URL_HTTP_ERROR: {
    description: 'The URL answered with an HTTP error status.',
    retryable: false,
    httpStatus: 502,
  },
  URL_TOO_LARGE: {
    description: 'The URL answered with more bytes than the configured limit (maxBytes).',
    retryable: false,
    httpStatus: 413,
  },
  DATA_INVALID_BASE64: {
    description: 'The data field is not valid base64.',
    retryable: false,
    httpStatus: 400,
  },
  DATA_TOO_LARGE: {
    description: 'The data field is larger than the configured byte limit (maxBytes).',
    retryable: false,
    httpStatus: 413,
  },
  JOB_INVALID: {
    description:
      'The job does not match the schema: an id and exactly one of url, file or data are required.',
    retryable: false,
    httpStatus: 400,
  },
  FILE_NOT_ALLOWED: {
    description:
      'The path is outside the directories that HTTP callers may read (FACEFLEET_FILE_ROOTS).',
    retryable: false,
    httpStatus: 403,
  },
  REQUEST_MALFORMED: {
    description:
      'The request body is not valid JSON, or not of the content type the endpoint takes.',
    retryable: false,
    httpStatus: 400,
  },
  REQUEST_TOO_LARGE: {
    description: 'The request body is larger than the configured limit.',
    retryable: false,
    httpStatus: 413,
  },
  UNAUTHORIZED: {
    description:
      'A bearer token is required (FACEFLEET_TOKEN is set) and none or a wrong one was sent.',
    retryable: false,
    httpStatus: 401,
  },
  NOT_FOUND: {
    description: 'No such endpoint, or no job with that key.',
    retryable: false,
    httpStatus: 404,
  },
  NO_WORKERS: {
    description: 'No worker is connected to the queue, so the job could not run; try again later.',
    retryable: true,
    httpStatus: 503,
  },
  REDIS_UNAVAILABLE: {
    description: 'Redis, which holds the queues, does not answer right now; try again later.',
    retryable: true,
    httpStatus: 503,
  },
  QUEUE_FULL: {
    description: 'Too many interactive requests are waiting in this API process; try again later.',
    retryable: true,
    httpStatus: 503,
  },
  RESULT_TIMEOUT: {
    description: 'The job did not finish within the time the API waits for it.',
    retryable: true,
    httpStatus: 504,
  },
  WORKER_CRASHED: {
    description: 'The inference process died while it held this image.',
    retryable: true,
    httpStatus: 500,
  },
  INTERNAL: {
    description: 'An unexpected fault inside facefleet; the message has the detail.',
    retryable: true,
    httpStatus: 500,
  },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

export const ERROR_CODES = Object.keys(ERRORS) as ErrorCode[];

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ERRORS, value);
}
