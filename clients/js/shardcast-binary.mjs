// shardcast binary payloads: encoders and decoders for every layout of the binary fast path
// (docs/PROTOCOL.md, "Binary payloads"). All integers and floats are little-endian.
//
// Works with the official phoenix.js client: push an ArrayBuffer (use `toArrayBuffer`) and
// phoenix sends a V2 binary frame; binary broadcasts arrive as ArrayBuffers.
//
//   import { encodeGameState, decodeGameState, toArrayBuffer } from "./shardcast-binary.mjs";
//   channel.push("game_state", toArrayBuffer(encodeGameState({ positions: [{ playerId: 1, x: 0, y: 0 }] })));
//   channel.on("game_update", (buf) => render(decodeGameState(buf)));
//
// No dependencies. zstd: `zstdStoreFrame` writes a valid (uncompressed) zstd frame; pass a real
// compressor / decompressor (e.g. the `fzstd` package's `decompress`) where one is available.

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

/** Error thrown for bytes that do not follow a layout. */
export class LayoutError extends Error {
  constructor(message) {
    super(message);
    this.name = "LayoutError";
  }
}

function bytesOf(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError("expected an ArrayBuffer or a typed array");
}

function viewOf(bytes) {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** An exactly sized ArrayBuffer with these bytes (what phoenix.js pushes as a binary frame). */
export function toArrayBuffer(data) {
  const bytes = bytesOf(data);
  if (bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer) {
    return bytes.buffer;
  }
  return bytes.slice().buffer;
}

/** Lowercase hex of bytes. */
export function toHex(data) {
  return Array.from(bytesOf(data), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Bytes of a hex string (even length, either case). */
export function fromHex(hex) {
  if (typeof hex !== "string" || hex.length % 2 !== 0 || /[^0-9a-fA-F]/.test(hex)) {
    throw new LayoutError("expected an even number of hex digits");
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

// ---------------------------------------------------------------------------
// game_state / game_update
//   u32 position_count, u32 object_count,
//   position_count x {u32 player_id, f32 x, f32 y},
//   object_count x {u32 len, u16 type_len, type (UTF-8), f32 x, f32 y, data}   (len covers the rest)
// ---------------------------------------------------------------------------

/**
 * Encodes `{positions: [{playerId, x, y}], objects: [{type, x, y, data?}]}`.
 * Coordinates are stored as f32.
 */
export function encodeGameState({ positions = [], objects = [] }) {
  const types = objects.map((o) => utf8Encoder.encode(o.type));
  const datas = objects.map((o) => (o.data === undefined ? new Uint8Array(0) : bytesOf(o.data)));
  let size = 8 + 12 * positions.length;
  objects.forEach((_, i) => {
    if (types[i].length > 0xffff) throw new LayoutError(`object ${i}: type longer than 65535 bytes`);
    size += 4 + 10 + types[i].length + datas[i].length;
  });
  const out = new Uint8Array(size);
  const v = viewOf(out);
  v.setUint32(0, positions.length, true);
  v.setUint32(4, objects.length, true);
  let at = 8;
  for (const p of positions) {
    v.setUint32(at, p.playerId >>> 0, true);
    v.setFloat32(at + 4, p.x, true);
    v.setFloat32(at + 8, p.y, true);
    at += 12;
  }
  objects.forEach((o, i) => {
    const len = 10 + types[i].length + datas[i].length;
    v.setUint32(at, len, true);
    v.setUint16(at + 4, types[i].length, true);
    out.set(types[i], at + 6);
    at += 6 + types[i].length;
    v.setFloat32(at, o.x, true);
    v.setFloat32(at + 4, o.y, true);
    out.set(datas[i], at + 8);
    at += 8 + datas[i].length;
  });
  return out;
}

/**
 * Decodes a game state, checking that lengths and counts agree exactly and that coordinates are
 * finite. Returns `{positions: [{playerId, x, y}], objects: [{type, x, y, data}]}`; `data` is a
 * view into `buf`.
 */
export function decodeGameState(buf) {
  const bytes = bytesOf(buf);
  if (bytes.length < 8) throw new LayoutError("shorter than the 8-byte header");
  const v = viewOf(bytes);
  const positionCount = v.getUint32(0, true);
  const objectCount = v.getUint32(4, true);
  if (positionCount * 12 > bytes.length - 8) throw new LayoutError("positions run past the end");
  const positions = new Array(positionCount);
  let at = 8;
  for (let i = 0; i < positionCount; i++, at += 12) {
    const p = { playerId: v.getUint32(at, true), x: v.getFloat32(at + 4, true), y: v.getFloat32(at + 8, true) };
    if (!Number.isFinite(p.x) || !Number.isFinite(p.y)) throw new LayoutError(`position ${i}: not finite`);
    positions[i] = p;
  }
  const objects = [];
  for (let i = 0; i < objectCount; i++) {
    if (at + 4 > bytes.length) throw new LayoutError(`object ${i}: truncated`);
    const len = v.getUint32(at, true);
    const start = at + 4;
    if (len < 10 || start + len > bytes.length) throw new LayoutError(`object ${i}: bad length ${len}`);
    const typeLen = v.getUint16(start, true);
    if (2 + typeLen + 8 > len) throw new LayoutError(`object ${i}: type overruns the record`);
    const type = utf8Decoder.decode(bytes.subarray(start + 2, start + 2 + typeLen));
    const x = v.getFloat32(start + 2 + typeLen, true);
    const y = v.getFloat32(start + 6 + typeLen, true);
    if (!Number.isFinite(x) || !Number.isFinite(y)) throw new LayoutError(`object ${i}: not finite`);
    objects.push({ type, x, y, data: bytes.subarray(start + 10 + typeLen, start + len) });
    at = start + len;
  }
  if (at !== bytes.length) throw new LayoutError(`${bytes.length - at} bytes after the last record`);
  return { positions, objects };
}

// ---------------------------------------------------------------------------
// audio_stream: u16 user_id_len, user_id (UTF-8), u64 server_timestamp_ms, u32 seq, audio
// (audio_data from a client is the audio bytes alone)
// ---------------------------------------------------------------------------

/** Encodes an audio_stream message (what the server sends); `serverTimestampMs` may be a BigInt. */
export function encodeAudioStream({ userId, serverTimestampMs, seq }, audio) {
  const id = utf8Encoder.encode(userId);
  if (id.length > 0xffff) throw new LayoutError("user id longer than 65535 bytes");
  const data = bytesOf(audio);
  const out = new Uint8Array(2 + id.length + 12 + data.length);
  const v = viewOf(out);
  v.setUint16(0, id.length, true);
  out.set(id, 2);
  v.setBigUint64(2 + id.length, BigInt(serverTimestampMs), true);
  v.setUint32(10 + id.length, seq >>> 0, true);
  out.set(data, 14 + id.length);
  return out;
}

/**
 * Decodes an audio_stream message: `{userId, serverTimestampMs (Number), seq, audio}` (`audio`
 * is a view into `buf`).
 */
export function decodeAudioStream(buf) {
  const bytes = bytesOf(buf);
  if (bytes.length < 2) throw new LayoutError("truncated header");
  const v = viewOf(bytes);
  const idLen = v.getUint16(0, true);
  if (bytes.length < 2 + idLen + 12) throw new LayoutError("truncated header");
  return {
    userId: utf8Decoder.decode(bytes.subarray(2, 2 + idLen)),
    serverTimestampMs: Number(v.getBigUint64(2 + idLen, true)),
    seq: v.getUint32(10 + idLen, true),
    audio: bytes.subarray(14 + idLen),
  };
}

// ---------------------------------------------------------------------------
// upload_chunk: 16-byte upload_id, u32 chunk_index, u32 total_chunks, chunk bytes
// ---------------------------------------------------------------------------

/** How a file of `size` bytes is cut: `{totalChunks, offset(i), length(i)}`. */
export function chunkPlan(size, chunkSize) {
  if (!(size > 0) || !(chunkSize > 0)) throw new RangeError("size and chunkSize must be positive");
  const totalChunks = Math.ceil(size / chunkSize);
  return {
    totalChunks,
    offset: (i) => i * chunkSize,
    length: (i) => Math.min(chunkSize, size - i * chunkSize),
  };
}

/** Encodes one upload_chunk; `uploadId` is the hex string from upload_start (or 16 bytes). */
export function encodeUploadChunk({ uploadId, chunkIndex, totalChunks }, data) {
  const id = typeof uploadId === "string" ? fromHex(uploadId) : bytesOf(uploadId);
  if (id.length !== 16) throw new LayoutError("upload_id must be 16 bytes");
  const chunk = bytesOf(data);
  const out = new Uint8Array(24 + chunk.length);
  const v = viewOf(out);
  out.set(id, 0);
  v.setUint32(16, chunkIndex >>> 0, true);
  v.setUint32(20, totalChunks >>> 0, true);
  out.set(chunk, 24);
  return out;
}

/** Decodes an upload_chunk: `{uploadId (hex), chunkIndex, totalChunks, data}`. */
export function decodeUploadChunk(buf) {
  const bytes = bytesOf(buf);
  if (bytes.length < 24) throw new LayoutError("shorter than the 24-byte chunk header");
  const v = viewOf(bytes);
  const chunkIndex = v.getUint32(16, true);
  const totalChunks = v.getUint32(20, true);
  if (totalChunks === 0 || chunkIndex >= totalChunks) throw new LayoutError("chunk_index out of range");
  return { uploadId: toHex(bytes.subarray(0, 16)), chunkIndex, totalChunks, data: bytes.subarray(24) };
}

// ---------------------------------------------------------------------------
// compressed_data / bulk_update: one zstd frame of {"type": "bulk_update", "updates": [...]}
// ---------------------------------------------------------------------------

const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];
const ZSTD_MAX_BLOCK = 128 * 1024;

/** The JSON document of a bulk update, as bytes. */
export function encodeBulkDocument(updates) {
  if (!Array.isArray(updates)) throw new TypeError("updates must be an array");
  return utf8Encoder.encode(JSON.stringify({ type: "bulk_update", updates }));
}

/** Parses and checks a bulk update document; returns its `updates`. */
export function decodeBulkDocument(buf) {
  const doc = JSON.parse(utf8Decoder.decode(bytesOf(buf)));
  if (doc === null || typeof doc !== "object" || doc.type !== "bulk_update" || !Array.isArray(doc.updates)) {
    throw new LayoutError('expected {"type": "bulk_update", "updates": [...]}');
  }
  return doc.updates;
}

/**
 * A valid zstd frame holding `content` uncompressed (raw blocks, content size in the header):
 * what to send where no zstd compressor is at hand. Any zstd decoder reads it.
 */
export function zstdStoreFrame(content) {
  const data = bytesOf(content);
  const blocks = Math.max(1, Math.ceil(data.length / ZSTD_MAX_BLOCK));
  const out = new Uint8Array(4 + 1 + 8 + blocks * 3 + data.length);
  const v = viewOf(out);
  out.set(ZSTD_MAGIC, 0);
  out[4] = 0xe0; // 8-byte content size, single segment, no checksum, no dictionary
  v.setBigUint64(5, BigInt(data.length), true);
  let at = 13;
  for (let b = 0; b < blocks; b++) {
    const start = b * ZSTD_MAX_BLOCK;
    const size = Math.min(ZSTD_MAX_BLOCK, data.length - start);
    const header = (b === blocks - 1 ? 1 : 0) | (0 << 1) | (size << 3); // raw block
    out[at] = header & 0xff;
    out[at + 1] = (header >>> 8) & 0xff;
    out[at + 2] = (header >>> 16) & 0xff;
    out.set(data.subarray(start, start + size), at + 3);
    at += 3 + size;
  }
  return out;
}

/**
 * A compressed_data payload for `updates`. `compress(bytes) → Uint8Array` must produce one zstd
 * frame; the default stores the document uncompressed (still a valid frame).
 */
export function encodeCompressedData(updates, { compress = zstdStoreFrame } = {}) {
  return compress(encodeBulkDocument(updates));
}

/**
 * Decodes a bulk_update (or compressed_data) payload with `decompress(bytes) → Uint8Array` (a
 * zstd decoder such as fzstd's `decompress`). Returns the updates.
 */
export function decodeCompressedData(buf, { decompress }) {
  const bytes = bytesOf(buf);
  if (bytes.length < 4 || ZSTD_MAGIC.some((b, i) => bytes[i] !== b)) throw new LayoutError("not a zstd frame");
  return decodeBulkDocument(decompress(bytes));
}
