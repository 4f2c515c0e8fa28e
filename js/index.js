// Build and sign focal image URLs: /cdn-cgi/image/<options>/<source>[?sig=...].
// No dependencies: signing uses Web Crypto (Node 18+, Deno, Bun, Cloudflare Workers, browsers).
// The same builder for Python is focal.url (src/focal/urls.py); signing is docs/signing.md.

const PREFIX = "/cdn-cgi/image/";

function encodeValue(value) {
  if (typeof value === "boolean") return value ? "true" : "false";
  // a list (draw's overlays): b64: and its JSON in base64url, the URL form of draw
  if (Array.isArray(value)) return "b64:" + base64url(new TextEncoder().encode(JSON.stringify(value)));
  const text = String(value);
  // kept as they are: ; : ( ) and, inside parentheses (rgb(1,2,3)), commas
  return encodeURIComponent(text)
    .replace(/%3B/gi, ";")
    .replace(/%3A/gi, ":")
    .replace(/%2C/gi, text.includes("(") ? "," : "%2C");
}

/** The options text: a string as it is, or an object's entries as key=value, in order. */
export function optionsText(options) {
  if (options == null) return "";
  if (typeof options === "string") return options;
  return Object.entries(options)
    .filter(([, value]) => value !== undefined && value !== null)
    .map(([key, value]) => `${key}=${encodeValue(value)}`)
    .join(",");
}

/** A remote URL as it is; a local path relative to the root, percent-encoded where needed. */
export function sourcePath(source) {
  if (/^https?:\/\//i.test(source)) return source;
  return encodeURI(source.replace(/^\/+/, "")).replace(/[?#]/g, encodeURIComponent);
}

/** The unsigned URL of `source` under `options` and/or `preset`, prefixed with `base`. */
export function url(source, options, { preset, base = "" } = {}) {
  let text = optionsText(options);
  if (preset != null) text = text ? `preset=${preset},${text}` : preset;
  if (!text) throw new Error("focal url: needs options or a preset");
  return base.replace(/\/+$/, "") + PREFIX + text + "/" + sourcePath(source);
}

function base64url(bytes) {
  let binary = "";
  for (const byte of new Uint8Array(bytes)) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** HMAC-SHA256 of the path (as sent), URL-safe base64 without padding. */
export async function sign(path, key) {
  const encoder = new TextEncoder();
  const cryptoKey = await crypto.subtle.importKey(
    "raw",
    encoder.encode(key),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  return base64url(await crypto.subtle.sign("HMAC", cryptoKey, encoder.encode(path)));
}

/** The signed URL: like url(), with ?sig= over its path. */
export async function signedUrl(source, options, { key, preset, base = "" } = {}) {
  if (!key) throw new Error("focal signedUrl: needs a key");
  const path = url(source, options, { preset });
  return base.replace(/\/+$/, "") + path + "?sig=" + (await sign(path, key));
}
