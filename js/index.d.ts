/** An overlay of draw: Cloudflare's keys (url, opacity, repeat, top, left, ...). */
export type Overlay = { url: string } & Record<string, string | number | boolean>;
export type Options =
  | Record<string, string | number | boolean | Overlay[] | undefined | null>
  | string;
export function optionsText(options?: Options | null): string;
export function sourcePath(source: string): string;
export function url(source: string, options?: Options | null, opts?: { preset?: string; base?: string }): string;
export function sign(path: string, key: string): Promise<string>;
export function signedUrl(
  source: string,
  options?: Options | null,
  opts: { key: string; preset?: string; base?: string },
): Promise<string>;
