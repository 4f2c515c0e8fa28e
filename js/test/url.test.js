import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { test } from "node:test";

import { optionsText, sign, signedUrl, sourcePath, url } from "../index.js";

test("options in order, values encoded where a URL needs it", () => {
  assert.equal(
    optionsText({ width: 256, fit: "cover", background: "#ff0000", anim: false, blur: undefined }),
    "width=256,fit=cover,background=%23ff0000,anim=false",
  );
  assert.equal(optionsText({ background: "rgb(1,2,3)" }), "background=rgb(1,2,3)");
  assert.equal(optionsText({ border: "width:3;color:#fff" }), "border=width:3;color:%23fff");
  assert.equal(optionsText("width=5"), "width=5");
});

test("sources: local paths from the root, remote URLs as they are", () => {
  assert.equal(sourcePath("/photos/a b.jpg"), "photos/a%20b.jpg");
  assert.equal(sourcePath("//a.jpg"), "a.jpg");
  assert.equal(sourcePath("https://cdn.example/a.jpg?x=1"), "https://cdn.example/a.jpg?x=1");
  assert.equal(sourcePath("odd?#.jpg"), "odd%3F%23.jpg");
});

test("url with options, a preset, both, and a base", () => {
  assert.equal(url("a.jpg", { width: 100 }), "/cdn-cgi/image/width=100/a.jpg");
  assert.equal(url("a.jpg", null, { preset: "avatar" }), "/cdn-cgi/image/avatar/a.jpg");
  assert.equal(
    url("a.jpg", { format: "webp" }, { preset: "avatar", base: "https://img.example/" }),
    "https://img.example/cdn-cgi/image/preset=avatar,format=webp/a.jpg",
  );
  assert.throws(() => url("a.jpg"), /needs options or a preset/);
});

test("the signature is HMAC-SHA256 of the path, base64url without padding", async () => {
  const path = "/cdn-cgi/image/width=256,height=256,fit=cover,gravity=face,zoom=0.5/astronaut.jpg";
  const expected = createHmac("sha256", "my-secret-key").update(path).digest("base64url");
  assert.equal(await sign(path, "my-secret-key"), expected);
  const signed = await signedUrl("astronaut.jpg", "width=256,height=256,fit=cover,gravity=face,zoom=0.5", {
    key: "my-secret-key",
    base: "http://127.0.0.1:1",
  });
  assert.equal(signed, `http://127.0.0.1:1${path}?sig=${expected}`);
  await assert.rejects(signedUrl("a.jpg", { width: 1 }, {}), /needs a key/);
});
