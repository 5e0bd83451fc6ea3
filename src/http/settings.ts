import { WorkerError } from '../errors.js';
import { configError, durationSetting, givenValue, settingName, type Env } from '../core/settings.js';

/** What the HTTP executor needs: where to send tasks, with which headers, and how long a call may take. */
export interface HttpApiConfig {
  url: URL;
  /** Sent with every call (authentication). Never logged. */
  headers: Record<string, string>;
  timeoutMs: number;
}

export interface HttpApiFlags {
  apiUrl?: string | undefined;
  header?: string[] | undefined;
  timeout?: string | undefined;
}

export const DEFAULT_TIMEOUT = '120s';

/** Headers that the worker sets itself, or that HTTP manages: refused in --header. */
const RESERVED_HEADERS = new Set(['content-type', 'content-length', 'idempotency-key', 'x-worker-id', 'host', 'transfer-encoding', 'connection']);
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** What HTTP (and undici) allow in a header value: tab, visible ASCII, space, Latin-1 beyond ASCII; no line breaks. */
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/** --api-url, --header and --timeout, over WORKER_API_URL, WORKER_API_HEADERS and WORKER_API_TIMEOUT. */
export function resolveHttpApi(flags: HttpApiFlags, env: Env): HttpApiConfig {
  const urlSource = { flag: '--api-url', value: flags.apiUrl, env, envName: 'WORKER_API_URL' };
  const urlText = givenValue(urlSource);
  if (urlText === undefined || urlText.trim() === '') {
    throw new WorkerError('CONFIG', 'no API to call: --api-url is not set', {
      hint: 'give --api-url http://host:port/path or set WORKER_API_URL (try `worker serve` for a reference API)',
    });
  }
  let url: URL;
  try {
    url = new URL(urlText);
  } catch {
    throw configError(settingName(urlSource), 'an http:// or https:// URL', redactUrl(urlText));
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw configError(settingName(urlSource), 'an http:// or https:// URL', redactUrl(urlText));
  const headerLines = flags.header && flags.header.length > 0 ? flags.header : (env.WORKER_API_HEADERS ?? '').split('\n').filter((line) => line.trim() !== '');
  const headers = parseHeaders(headerLines);
  if (url.username || url.password) moveCredentialsToHeader(url, headers);
  const timeoutMs = durationSetting({ flag: '--timeout', value: flags.timeout, env, envName: 'WORKER_API_TIMEOUT', fallback: DEFAULT_TIMEOUT });
  return { url, headers, timeoutMs };
}

export function parseHeaders(lines: readonly string[]): Record<string, string> {
  const headers: Record<string, string> = {};
  lines.forEach((line, i) => {
    const colon = line.indexOf(':');
    const name = colon === -1 ? '' : line.slice(0, colon).trim();
    // The value may be a secret: messages name the header, never its value.
    if (!HEADER_NAME.test(name)) {
      throw new WorkerError('CONFIG', `header #${i + 1} is not of the form "Name: value"${name ? ` (name ${JSON.stringify(name)})` : ''}`, {
        hint: `give --header 'Authorization: Bearer …' (or one "Name: value" per line in WORKER_API_HEADERS)`,
      });
    }
    if (RESERVED_HEADERS.has(name.toLowerCase())) {
      throw new WorkerError('CONFIG', `header "${name}" is set by the worker itself and cannot be given`, {
        hint: 'remove it from --header / WORKER_API_HEADERS',
      });
    }
    const value = line.slice(colon + 1).trim();
    if (!HEADER_VALUE.test(value)) {
      // Found here, not by undici at every call, where each task would burn an attempt on it.
      throw new WorkerError(
        'CONFIG',
        `the value of header "${name}" holds a character HTTP does not allow (a line break or another control character, or one beyond Latin-1)`,
        {
          hint: 'check how the value was pasted or quoted in --header / WORKER_API_HEADERS',
        },
      );
    }
    headers[name.toLowerCase()] = value;
  });
  return headers;
}

/**
 * `http://user:password@host/` means HTTP Basic authentication, as with curl; undici would drop the
 * credentials. They become an Authorization header (whose value, like every header's, is never logged)
 * and leave the URL.
 */
function moveCredentialsToHeader(apiUrl: URL, headers: Record<string, string>): void {
  if (headers.authorization !== undefined) {
    throw new WorkerError('CONFIG', '--api-url holds a user and password, and an Authorization header is given too', {
      hint: "give the credentials once: in the URL (Basic authentication) or as --header 'Authorization: …'",
    });
  }
  const decoded = (text: string) => {
    try {
      return decodeURIComponent(text);
    } catch {
      return text; // a % that starts no escape stands for itself
    }
  };
  const credentials = `${decoded(apiUrl.username)}:${decoded(apiUrl.password)}`;
  headers.authorization = `Basic ${Buffer.from(credentials).toString('base64')}`;
  apiUrl.username = '';
  apiUrl.password = '';
}

/** A URL for logs: user and password hidden. */
export function redactUrl(text: string): string {
  try {
    const url = new URL(text);
    if (url.username || url.password) {
      url.username = url.username ? '***' : '';
      url.password = url.password ? '***' : '';
    }
    return url.toString();
  } catch {
    return text.replace(/\/\/[^/@]*@/, '//***@');
  }
}
