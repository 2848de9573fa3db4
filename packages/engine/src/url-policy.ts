import { lookup, type LookupAddress } from 'node:dns';
import { BlockList, isIP } from 'node:net';
import { Agent } from 'undici';
import { FaceFleetError } from './errors.js';

/**
 * Addresses a URL job may not reach unless allowed: loopback, private, link-local (cloud
 * metadata at 169.254.169.254 among them), carrier-grade NAT, multicast and reserved ranges.
 */
const PRIVATE = new BlockList();
for (const [net, bits] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const)
  PRIVATE.addSubnet(net, bits, 'ipv4');
for (const [net, bits] of [
  ['::', 128],
  ['::1', 128],
  ['fc00::', 7],
  ['fe80::', 10],
  ['ff00::', 8],
] as const)
  PRIVATE.addSubnet(net, bits, 'ipv6');

function family(address: string): 'ipv4' | 'ipv6' {
  return isIP(address) === 6 ? 'ipv6' : 'ipv4';
}

/**
 * Which hosts URL jobs may reach. `allow` (FACEFLEET_URL_ALLOW) names hosts or CIDR ranges exempt
 * from the private-address rule. The rule is applied to the address actually connected to (in the
 * connection's DNS lookup, so a name cannot resolve one way when checked and another when used),
 * to address literals before any connection, and again at every redirect.
 */
export class UrlPolicy {
  private readonly hosts = new Set<string>();
  private readonly ranges = new BlockList();
  readonly agent: Agent;

  constructor(allow: readonly string[], connectTimeoutMs: number) {
    for (const entry of allow.map((a) => a.trim().toLowerCase()).filter(Boolean)) {
      const [address, bits] = entry.split('/');
      if (address && isIP(address))
        this.ranges.addSubnet(
          address,
          Number(bits ?? (isIP(address) === 6 ? 128 : 32)),
          family(address),
        );
      else this.hosts.add(entry);
    }
    this.agent = new Agent({
      connect: {
        timeout: connectTimeoutMs,
        lookup: (hostname, options, callback) => this.lookup(hostname, options, callback),
      },
    });
  }

  /** Refuses a URL before any connection: its scheme, and its host when that is an address. */
  check(url: URL): void {
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new FaceFleetError('URL_INVALID', `not an http(s) URL: ${url.href.slice(0, 200)}`);
    }
    const host = url.hostname.replace(/^\[|\]$/g, '');
    if (isIP(host) && !this.allowedAddress(host) && !this.hosts.has(host)) {
      throw forbidden(url.hostname);
    }
  }

  private allowedAddress(address: string): boolean {
    return !PRIVATE.check(address, family(address)) || this.ranges.check(address, family(address));
  }

  private lookup(
    hostname: string,
    options: { all?: boolean },
    callback: (
      error: NodeJS.ErrnoException | null,
      address: string | LookupAddress[],
      family?: number,
    ) => void,
  ): void {
    lookup(hostname, { all: true }, (error, addresses) => {
      if (error) return callback(error, []);

      const usable = this.hosts.has(hostname.toLowerCase())
        ? addresses
        : addresses.filter((a) => this.allowedAddress(a.address));
      const first = usable[0];
      if (!first) return callback(forbiddenError(hostname), []);
      if (options.all) return callback(null, usable);
      return callback(null, first.address, first.family);
    });
  }
}

const FORBIDDEN = 'EFACEFLEET_FORBIDDEN_ADDRESS';

function forbiddenError(hostname: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${hostname} resolves only to addresses URL jobs may not reach`), {
    code: FORBIDDEN,
  });
}

export function forbidden(hostname: string): FaceFleetError {
  return new FaceFleetError(
    'URL_FORBIDDEN',
    `${hostname} is a loopback, private, link-local or reserved address; URL jobs may not reach it unless FACEFLEET_URL_ALLOW names it`,
  );
}

/** Whether a fetch failed because the policy refused the address it resolved to. */
export function isForbidden(error: unknown): boolean {
  let cause: unknown = error;
  for (let depth = 0; cause && depth < 5; depth += 1) {
    if ((cause as { code?: string }).code === FORBIDDEN) return true;
    cause = (cause as { cause?: unknown }).cause;
  }
  return false;
}
