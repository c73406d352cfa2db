// Decode hbseg's bit-packed mask PNGs (8-bit RGBA, bit c of the 32-bit pixel = class c).
//
// Why not <img> + canvas.getImageData: a canvas stores premultiplied alpha, so wherever
// the alpha byte (classes 24-31) is 0 the other three bytes read back as 0 and every
// finger bone there would vanish; and on file:// pages Chromium refuses to read back a
// canvas that drew a local file at all. So the PNG is parsed here and inflated with the
// browser's own DecompressionStream; only the result is painted on a canvas.
"use strict";

async function hbsegDecodePackedPng(base64) {
  const bin = atob(base64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  const sig = [137, 80, 78, 71, 13, 10, 26, 10];
  if (sig.some((v, i) => bytes[i] !== v)) throw new Error("not a PNG");
  const view = new DataView(bytes.buffer);
  let width = 0, height = 0, pos = 8;
  const idat = [];
  while (pos + 8 <= bytes.length) {
    const len = view.getUint32(pos);
    const type = String.fromCharCode(...bytes.subarray(pos + 4, pos + 8));
    const data = bytes.subarray(pos + 8, pos + 8 + len);
    if (type === "IHDR") {
      width = view.getUint32(pos + 8);
      height = view.getUint32(pos + 12);
      const depth = data[8], colour = data[9], interlace = data[12];
      if (depth !== 8 || colour !== 6 || interlace !== 0) {
        throw new Error(`not a packed mask PNG (bit depth ${depth}, colour type ${colour})`);
      }
    } else if (type === "IDAT") {
      idat.push(data);
    } else if (type === "IEND") {
      break;
    }
    pos += 12 + len;
  }
  // PNG's zlib stream is what the Compression Streams spec calls "deflate"
  const stream = new Blob(idat).stream().pipeThrough(new DecompressionStream("deflate"));
  const raw = new Uint8Array(await new Response(stream).arrayBuffer());
  const stride = width * 4;
  if (raw.length !== height * (stride + 1)) throw new Error("truncated PNG data");
  const out = new Uint8Array(height * stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const src = y * (stride + 1) + 1, dst = y * stride, up = dst - stride;
    for (let x = 0; x < stride; x++) {
      const a = x >= 4 ? out[dst + x - 4] : 0;
      const b = y > 0 ? out[up + x] : 0;
      const c = x >= 4 && y > 0 ? out[up + x - 4] : 0;
      let v = raw[src + x];
      if (filter === 1) v += a;
      else if (filter === 2) v += b;
      else if (filter === 3) v += (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
        v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      } else if (filter !== 0) throw new Error(`bad PNG filter ${filter}`);
      out[dst + x] = v;  // a Uint8Array stores v mod 256
    }
  }
  // byte k of a pixel holds classes 8k..8k+7; every browser platform is little-endian,
  // so one Uint32 per pixel is exactly the packed bit set
  return { width, height, bits: new Uint32Array(out.buffer) };
}
