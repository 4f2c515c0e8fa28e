// The URLs web frameworks' own Cloudflare URL builders write, from the real npm packages.
// Usage: node urls.mjs <focal base URL> <remote origin URL>; prints a JSON list of
// {framework, case, url}. tests/frameworks/matrix.py requests each from a real focal serve.
import nuxtCloudflare from "@nuxt/image/runtime/providers/cloudflare";
import { generate as unpicCloudflare } from "unpic/providers/cloudflare";

import nextLoader from "./next-loader.mjs";

const [base, origin] = process.argv.slice(2);
const rows = [];
const add = (framework, name, url) => rows.push({ framework, case: name, url });

// unpic: its cloudflare provider, with a domain (it adds f=auto and fit=cover by default)
const domain = new URL(base).host;
const unpic = (src, operations) => unpicCloudflare(src, operations, { domain }).replace(/^https:/, "http:");
add("unpic", "width=300, height=200", unpic("/coffee.jpg", { width: 300, height: 200 }));
add("unpic", "width=300, quality=60", unpic("/coffee.jpg", { width: 300, quality: 60 }));
add("unpic", "remote source, width=250", unpic(`${origin}/coffee.jpg`, { width: 250 }));

// Nuxt Image: its cloudflare provider module, run as Nuxt runs it (getImage with baseURL)
const nuxt = (src, modifiers) => nuxtCloudflare().getImage(src, { modifiers, baseURL: base }).url;
add("nuxt", "width=300, height=200, fit=cover, quality=70, format=webp",
  nuxt("/coffee.jpg", { width: 300, height: 200, fit: "cover", quality: 70, format: "webp" }));
add("nuxt", "width=300, height=300, fit=fill", nuxt("/coffee.jpg", { width: 300, height: 300, fit: "fill" }));
add("nuxt", "width=300, height=300, fit=inside, background=#ff0000",
  nuxt("/coffee.jpg", { width: 300, height: 300, fit: "inside", background: "#ff0000" }));
add("nuxt", "width=300, height=300, fit=outside", nuxt("/coffee.jpg", { width: 300, height: 300, fit: "outside" }));
add("nuxt", "width=200, height=200, fit=cover, gravity=auto",
  nuxt("/astronaut.jpg", { width: 200, height: 200, fit: "cover", gravity: "auto" }));
add("nuxt", "remote source, width=250", nuxt(`${origin}/coffee.jpg`, { width: 250 }));

// Next.js: the custom loader of Next's docs (next-loader.mjs, the snippet in docs/frameworks.md)
const next = (src, width, quality) => base + nextLoader({ src, width, quality });
add("next", "src=/coffee.jpg, width=640, quality=75", next("/coffee.jpg", 640, 75));
add("next", "src=/coffee.jpg, width=384 (no quality)", next("/coffee.jpg", 384));
add("next", "remote src, width=256", next(`${origin}/coffee.jpg`, 256, 60));
// the same loader without its normalizeSrc: "/cdn-cgi/image/...//coffee.jpg"
add("next", "src=/coffee.jpg, loader without normalizeSrc",
  base + `/cdn-cgi/image/width=640,quality=75,format=auto/${"/coffee.jpg"}`);

console.log(JSON.stringify(rows, null, 1));
