// focal playground: builds a /cdn-cgi/image/ URL from the form, shows the JSON description
// (faces, outer box, focal point, crop) drawn over the original, and the result image.
// No framework, no outside requests: everything comes from this server.
"use strict";

(() => {
  const IMAGE_PREFIX = "/cdn-cgi/image/";
  // What a browser sends for <img>: lets format=auto pick what this browser shows.
  const IMAGE_ACCEPT = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8";
  const SVG_NS = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  const form = $("controls");
  const fields = {
    sample: $("sample"), upload: $("upload"), width: $("width"), height: $("height"),
    fit: $("fit"), gravity: $("gravity"), gx: $("gravity-x"), gy: $("gravity-y"),
    zoom: $("zoom"), format: $("format"), quality: $("quality"), redact: $("redact"),
  };

  let source = null; // {kind: "sample", name} or {kind: "upload", file}
  let run = 0; // answers of older runs are dropped
  let objectUrls = [];

  // ---- options ---------------------------------------------------------------------------

  function numberField(input, label) {
    if (input.validity.badInput) throw new Error(`${label} must be a number.`);
    return input.value.trim();
  }

  function optionParts() {
    const parts = [];
    const width = numberField(fields.width, "Width");
    const height = numberField(fields.height, "Height");
    if (width) parts.push(`width=${width}`);
    if (height) parts.push(`height=${height}`);
    if (fields.fit.value) parts.push(`fit=${fields.fit.value}`);
    const gravity = fields.gravity.value;
    if (gravity === "point") {
      const x = numberField(fields.gx, "X") || "0.5";
      const y = numberField(fields.gy, "Y") || "0.5";
      parts.push(`gravity=${x}x${y}`);
    } else if (gravity) {
      parts.push(`gravity=${gravity}`);
    }
    if (gravity === "face") parts.push(`zoom=${fields.zoom.value}`);
    if (fields.redact.value) parts.push("redact=faces");
    if (fields.redact.value === "pixelate") parts.push("redact-style=pixelate");
    if (fields.format.value) parts.push(`format=${fields.format.value}`);
    const quality = numberField(fields.quality, "Quality");
    if (quality) parts.push(`quality=${quality}`);
    return parts;
  }

  function optionsText(parts) {
    return parts.length ? parts.join(",") : "fit=scale-down";
  }

  function jsonOptionsText(parts) {
    return optionsText(parts.filter((p) => !p.startsWith("format=")).concat("format=json"));
  }

  function imageUrl(options, name) {
    return `${IMAGE_PREFIX}${options}/${encodeURIComponent(name)}`;
  }

  // ---- network ---------------------------------------------------------------------------

  async function errorText(response) {
    const text = await response.text();
    try {
      const body = JSON.parse(text);
      return body.error || body.message || text;
    } catch {
      return text.trim() || response.statusText;
    }
  }

  async function fetchOk(url, init) {
    const response = await fetch(url, init);
    if (!response.ok) {
      throw new Error(`${response.status}: ${await errorText(response)}`);
    }
    return response;
  }

  async function runSample(name, parts) {
    const options = optionsText(parts);
    const url = imageUrl(options, name);
    const jsonUrl = imageUrl(jsonOptionsText(parts), name);
    // no-store: every run asks the server (its variant cache still answers), no 304 round trips
    const description = await (await fetchOk(jsonUrl, { cache: "no-store" })).json();
    let image = null;
    if (fields.format.value !== "json") {
      const response = await fetchOk(url, { headers: { Accept: IMAGE_ACCEPT }, cache: "no-store" });
      const blob = await response.blob();
      image = { src: keepUrl(URL.createObjectURL(blob)), bytes: blob.size, type: blob.type };
    }
    return {
      url, description, image,
      original: `/playground/original/${encodeURIComponent(name)}`,
    };
  }

  async function runUpload(file, parts) {
    const options = optionsText(parts);
    const response = await fetchOk(
      `/playground/transform?options=${encodeURIComponent(options)}`,
      {
        method: "POST",
        body: file,
        headers: { "Content-Type": "application/octet-stream", Accept: IMAGE_ACCEPT },
      },
    );
    const body = await response.json();
    let image = null;
    if (body.image) {
      const comma = body.image.indexOf(",");
      const type = body.image.slice(5, body.image.indexOf(";"));
      image = { src: body.image, bytes: base64Bytes(body.image.slice(comma + 1)), type };
    }
    return {
      url: imageUrl(options, file.name || "your-image"),
      description: body.description, image,
      original: keepUrl(URL.createObjectURL(file)),
    };
  }

  function base64Bytes(text) {
    const padding = text.endsWith("==") ? 2 : text.endsWith("=") ? 1 : 0;
    return (text.length * 3) / 4 - padding;
  }

  function keepUrl(url) {
    objectUrls.push(url);
    return url;
  }

  function releaseUrls(keep) {
    for (const url of objectUrls) if (!keep.includes(url)) URL.revokeObjectURL(url);
    objectUrls = objectUrls.filter((url) => keep.includes(url));
  }

  // ---- the description -------------------------------------------------------------------

  const pick = (object, ...names) => {
    for (const name of names) if (object && object[name] !== undefined) return object[name];
    return undefined;
  };

  function boxOf(value) {
    if (!value) return null;
    if (Array.isArray(value)) return value.length === 4 ? value.map(Number) : null;
    if (value.box) return boxOf(value.box);
    if (value.left !== undefined) {
      return [value.left, value.top, value.left + value.width, value.top + value.height].map(Number);
    }
    if (value.x1 !== undefined) return [value.x1, value.y1, value.x2, value.y2].map(Number);
    return null;
  }

  function pointOf(value) {
    if (!value) return null;
    if (Array.isArray(value)) return value.slice(0, 2).map(Number);
    return [Number(value.x), Number(value.y)];
  }

  function facesOf(d) {
    const faces = pick(d, "faces") || [];
    const scores = pick(d, "scores", "face_scores") || [];
    return faces
      .map((face, i) => ({ box: boxOf(face), score: pick(face, "score") ?? scores[i] }))
      .filter((face) => face.box);
  }

  function readDescription(d) {
    const original = pick(d, "original") || {};
    return {
      width: pick(d, "width"),
      height: pick(d, "height"),
      format: pick(d, "format"),
      bytes: pick(d, "bytes", "size"),
      original: {
        width: Number(pick(original, "width") ?? pick(d, "original_width")),
        height: Number(pick(original, "height") ?? pick(d, "original_height")),
        format: pick(original, "format") ?? pick(d, "original_format"),
        bytes: pick(original, "bytes", "file_size") ?? pick(d, "original_bytes"),
      },
      faces: facesOf(d),
      outerBox: boxOf(pick(d, "outer_box")),
      focalPoint: pointOf(pick(d, "focal_point")),
      crop: boxOf(pick(d, "crop")),
      gravity: pick(d, "gravity", "gravity_used"),
      fallback: pick(d, "fallback"),
      timings: pick(d, "timings") || {},
    };
  }

  // ---- drawing ---------------------------------------------------------------------------

  function svg(tag, attributes) {
    const element = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
    return element;
  }

  function rect(box, attributes) {
    const [x1, y1, x2, y2] = box;
    return svg("rect", { x: x1, y: y1, width: x2 - x1, height: y2 - y1, ...attributes });
  }

  function titled(element, text) {
    const title = svg("title", {});
    title.textContent = text;
    element.appendChild(title);
    return element;
  }

  const round = (n) => Math.round(n * 10) / 10;

  function drawOverlay(info, width, height) {
    const overlay = $("overlay");
    const layer = $("faces");
    layer.replaceChildren();
    overlay.setAttribute("viewBox", `0 0 ${width} ${height}`);
    overlay.dataset.width = width;
    overlay.dataset.height = height;
    const unit = Math.max(width, height);
    if (info.crop) {
      const [x1, y1, x2, y2] = info.crop;
      layer.appendChild(svg("path", {
        id: "crop-shade", class: "shade", "fill-rule": "evenodd",
        d: `M0 0H${width}V${height}H0Z M${x1} ${y1}H${x2}V${y2}H${x1}Z`,
      }));
      layer.appendChild(titled(rect(info.crop, {
        id: "crop-rect", class: "crop",
        "data-left": x1, "data-top": y1, "data-width": x2 - x1, "data-height": y2 - y1,
      }), `crop ${round(x2 - x1)}×${round(y2 - y1)} at ${round(x1)}, ${round(y1)}`));
    }
    info.faces.forEach((face, i) => {
      const [x1, y1, x2, y2] = face.box;
      const score = face.score === undefined ? "" : Number(face.score).toFixed(2);
      layer.appendChild(titled(rect(face.box, {
        id: `face-${i}`, class: "face",
        "data-x1": x1, "data-y1": y1, "data-x2": x2, "data-y2": y2, "data-score": score,
      }), `face ${i + 1}${score ? `, score ${score}` : ""}`));
      if (score) {
        const label = svg("text", {
          class: "score", x: x1, y: Math.max(y1 - unit * 0.008, unit * 0.03),
          "font-size": unit * 0.028, "aria-hidden": "true",
        });
        label.textContent = score;
        layer.appendChild(label);
      }
    });
    if (info.outerBox) {
      const [x1, y1, x2, y2] = info.outerBox;
      layer.appendChild(titled(rect(info.outerBox, {
        id: "outer-box", class: "outer", "data-x1": x1, "data-y1": y1, "data-x2": x2, "data-y2": y2,
      }), "outer box of the faces"));
    }
    if (info.focalPoint) {
      const [x, y] = info.focalPoint;
      const r = unit * 0.012;
      const mark = svg("g", { id: "focal-point", class: "focal", "data-x": x, "data-y": y });
      mark.appendChild(svg("circle", { cx: x, cy: y, r }));
      mark.appendChild(svg("line", { x1: x - 2.5 * r, y1: y, x2: x + 2.5 * r, y2: y }));
      mark.appendChild(svg("line", { x1: x, y1: y - 2.5 * r, x2: x, y2: y + 2.5 * r }));
      layer.appendChild(titled(mark, `focal point ${round(x)}, ${round(y)}`));
    }
  }

  // ---- showing a run ---------------------------------------------------------------------

  function kilobytes(bytes) {
    return bytes === undefined || bytes === null ? "" : `${(Number(bytes) / 1024).toFixed(1)} kB`;
  }

  function sizeText(width, height, format, bytes) {
    return [width && height ? `${width}×${height}` : "", format || "", kilobytes(bytes)]
      .filter(Boolean).join(", ");
  }

  async function loadImage(img, src) {
    img.src = src;
    await img.decode();
  }

  function showSummary(info) {
    const rows = [
      ["Gravity used", info.gravity ?? "—"],
      ["Fallback", info.fallback ?? "none"],
      ["Faces found", String(info.faces.length)],
      ["Crop", info.crop
        ? `${round(info.crop[2] - info.crop[0])}×${round(info.crop[3] - info.crop[1])} at ` +
          `${round(info.crop[0])}, ${round(info.crop[1])}`
        : "—"],
      ["Focal point", info.focalPoint ? info.focalPoint.map(round).join(", ") : "—"],
    ];
    const list = $("summary");
    list.replaceChildren();
    for (const [term, value] of rows) {
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = term;
      dd.textContent = value;
      list.append(dt, dd);
    }
  }

  function showTimings(timings) {
    const body = $("timings").tBodies[0];
    body.replaceChildren();
    let total = 0;
    for (const [stage, ms] of Object.entries(timings)) {
      total += Number(ms);
      body.appendChild(timingRow(stage, ms));
    }
    if (Object.keys(timings).length > 1) body.appendChild(timingRow("total", total, true));
  }

  function timingRow(stage, ms, strong = false) {
    const row = document.createElement("tr");
    const name = document.createElement(strong ? "th" : "td");
    if (strong) name.scope = "row";
    const value = document.createElement("td");
    name.textContent = stage;
    value.textContent = Number(ms).toFixed(1);
    row.append(name, value);
    return row;
  }

  async function show(answer) {
    const info = readDescription(answer.description);
    const original = $("original");
    await loadImage(original, answer.original).catch(() => {
      original.removeAttribute("src"); // a source this browser cannot show: the overlay stays
    });
    const width = info.original.width || original.naturalWidth;
    const height = info.original.height || original.naturalHeight;
    $("original-stage").style.aspectRatio = `${width} / ${height}`;
    drawOverlay(info, width, height);
    $("original-size").textContent = sizeText(width, height, info.original.format, info.original.bytes);

    const result = $("result");
    const note = $("result-note");
    if (answer.image) {
      await loadImage(result, answer.image.src);
      result.hidden = false;
      note.hidden = true;
      $("result-size").textContent = sizeText(
        result.naturalWidth, result.naturalHeight, answer.image.type, answer.image.bytes);
    } else {
      result.removeAttribute("src");
      result.hidden = true;
      note.hidden = false;
      note.textContent = "format=json answers a description (below) instead of an image.";
      $("result-size").textContent = "";
    }
    releaseUrls([answer.original, answer.image ? answer.image.src : ""]);

    $("url").value = source.kind === "sample" ? new URL(answer.url, location.href).href : answer.url;
    $("copy-status").textContent = source.kind === "upload"
      ? "An uploaded image has no URL: this is the URL it would have if the server held it."
      : "";
    $("json").textContent = JSON.stringify(answer.description, null, 2);
    showSummary(info);
    showTimings(info.timings);
    $("timings-note").textContent = source.kind === "sample"
      ? "Milliseconds per stage of the description request (format=json)."
      : "Milliseconds per stage of this upload's transformation.";
  }

  function showError(message) {
    $("error").textContent = message;
    document.body.dataset.state = "error";
  }

  async function transform() {
    if (!source) return;
    const mine = ++run;
    document.body.dataset.state = "loading";
    $("error").textContent = "";
    try {
      const parts = optionParts();
      const answer = source.kind === "sample"
        ? await runSample(source.name, parts)
        : await runUpload(source.file, parts);
      if (mine !== run) return;
      await show(answer);
      if (mine === run) document.body.dataset.state = "done";
    } catch (error) {
      if (mine === run) showError(error.message || String(error));
    }
  }

  // ---- controls --------------------------------------------------------------------------

  function syncControls() {
    const face = fields.gravity.value === "face";
    fields.zoom.disabled = !face;
    $("zoom-value").textContent = fields.zoom.value;
    $("point-fields").hidden = fields.gravity.value !== "point";
  }

  function describeSource() {
    $("source").textContent = source
      ? `Showing: ${source.kind === "sample" ? source.name : `${source.file.name} (uploaded)`}`
      : "No image in the served folder: upload one.";
  }

  async function loadSamples() {
    const response = await fetchOk("/playground/samples");
    const { samples } = await response.json();
    for (const name of samples) fields.sample.appendChild(new Option(name, name));
    if (samples.length) source = { kind: "sample", name: samples[0] };
    describeSource();
  }

  async function copyUrl() {
    const url = $("url").value;
    if (!url) return;
    try {
      await navigator.clipboard.writeText(url);
    } catch {
      $("url").select();
      document.execCommand("copy");
    }
    $("copy-status").textContent = "URL copied.";
  }

  fields.sample.addEventListener("change", () => {
    source = { kind: "sample", name: fields.sample.value };
    fields.upload.value = "";
    describeSource();
    transform();
  });
  fields.upload.addEventListener("change", () => {
    const file = fields.upload.files[0];
    if (!file) return;
    source = { kind: "upload", file };
    describeSource();
    transform();
  });
  fields.zoom.addEventListener("input", syncControls);
  form.addEventListener("change", (event) => {
    if (event.target === fields.sample || event.target === fields.upload) return;
    syncControls();
    transform();
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    transform();
  });
  $("copy").addEventListener("click", copyUrl);

  syncControls();
  loadSamples().then(transform, (error) => showError(`Could not list the samples: ${error.message}`));
})();
