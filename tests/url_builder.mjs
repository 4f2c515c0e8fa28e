// Prints, one per line, the URLs js/index.js builds for the JSON list of requests in argv[2]:
// [{source, options, preset, key, base}, ...]; with a key the URL is signed.
import { signedUrl, url } from "../js/index.js";

for (const { source, options, preset, key, base } of JSON.parse(process.argv[2])) {
  console.log(key ? await signedUrl(source, options, { key, preset, base }) : url(source, options, { preset, base }));
}
