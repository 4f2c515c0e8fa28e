// A Next.js custom image loader for focal, as in Next's docs for Cloudflare (next.config.js:
// images: { loader: "custom", loaderFile: "./focal-loader.js" }). Relative URLs: serve focal
// under your site's /cdn-cgi/image/, or prefix the returned path with focal's origin.
const normalizeSrc = (src) => (src.startsWith("/") ? src.slice(1) : src);

export default function focalLoader({ src, width, quality }) {
  const params = [`width=${width}`, `quality=${quality || 75}`, "format=auto"];
  return `/cdn-cgi/image/${params.join(",")}/${normalizeSrc(src)}`;
}
