/**
 * Decoding twin of `src/corevital_widgets/widgets/payload.py` (see its docstring for the layout):
 * "CVW1" | uint32 header length | JSON header | pad to 8 | data (arrays at 8-aligned offsets).
 */

export type DType = "f4" | "f2" | "i4" | "i2" | "u4" | "u2" | "u1" | "b1" | "str";

export interface Entry {
  name: string;
  dtype: DType;
  shape: number[];
  offset: number;
  nbytes: number;
}

export type NumArray = Float32Array | Int32Array | Int16Array | Uint32Array | Uint16Array | Uint8Array;

export interface NDArray {
  /** Values, row-major; float16 is widened to Float32Array. */
  data: NumArray;
  shape: number[];
  dtype: DType;
}

/** The trace payload's JSON meta (`trace_meta` in payload.py); only the fields read by name are typed. */
export interface TraceMeta extends Record<string, any> {
  /** Decoder layers with softmax attention, ascending (hybrid stacks leave out their state-space /
   * linear-attention / convolution blocks, whose attention metrics are NaN). Absent: all layers. */
  attention_layers?: number[];
  /** The same for the prompt stack (the encoder of encoder-decoders): the prompt heatmap and the graph. */
  prompt_attention_layers?: number[];
}

export interface Payload {
  meta: TraceMeta;
  arrays: Record<string, NDArray>;
  /** String arrays, flattened row-major, with their shapes in `stringShapes`. */
  strings: Record<string, string[]>;
  stringShapes: Record<string, number[]>;
  nbytes: number;
}

const MAGIC = [0x43, 0x56, 0x57, 0x31]; // "CVW1"
const ITEM: Record<Exclude<DType, "str">, number> = { f4: 4, f2: 2, i4: 4, i2: 2, u4: 4, u2: 2, u1: 1, b1: 1 };

/** IEEE 754 half -> float for every element. */
export function f16ToF32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const h = src[i];
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const f = h & 0x3ff;
    if (e === 0) out[i] = s * f * 2 ** -24;
    else if (e === 31) out[i] = f ? NaN : s * Infinity;
    else out[i] = s * (1 + f / 1024) * 2 ** (e - 15);
  }
  return out;
}

function toBytes(src: DataView | ArrayBuffer | Uint8Array): Uint8Array {
  if (src instanceof Uint8Array) return src;
  if (src instanceof ArrayBuffer) return new Uint8Array(src);
  return new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
}

/** A typed view when the absolute offset is aligned, else a copy (DataViews may start anywhere). */
function typed<T extends NumArray>(bytes: Uint8Array, lo: number, n: number, item: number,
  Ctor: { new (b: ArrayBuffer, o: number, l: number): T }): T {
  const abs = bytes.byteOffset + lo;
  if (abs % item === 0) return new Ctor(bytes.buffer as ArrayBuffer, abs, n);
  const copy = bytes.slice(lo, lo + n * item);
  return new Ctor(copy.buffer, 0, n);
}

const DECODER = new TextDecoder();

/** Decode one payload. Throws on a wrong magic or version, or an entry running past the end. */
export function decodePayload(src: DataView | ArrayBuffer | Uint8Array): Payload {
  const bytes = toBytes(src);
  if (bytes.length < 8 || MAGIC.some((m, i) => bytes[i] !== m)) throw new Error("not a corevital payload (bad magic)");
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const hlen = dv.getUint32(4, true);
  const header = JSON.parse(DECODER.decode(bytes.subarray(8, 8 + hlen)));
  if (header.version !== 1) throw new Error(`payload version ${header.version} is not supported`);
  const start = 8 + hlen + ((8 - ((8 + hlen) % 8)) % 8);
  const out: Payload = { meta: header.meta ?? {}, arrays: {}, strings: {}, stringShapes: {}, nbytes: bytes.length };
  for (const e of header.arrays as Entry[]) {
    const lo = start + e.offset;
    if (lo + e.nbytes > bytes.length) throw new Error(`payload truncated: ${e.name} runs past the end`);
    const count = e.shape.reduce((a, b) => a * b, 1);
    if (e.dtype === "str") {
      const offs = typed(bytes, lo, count + 1, 4, Uint32Array);
      const textLo = lo + 4 * (count + 1);
      const list = new Array<string>(count);
      for (let i = 0; i < count; i++) list[i] = DECODER.decode(bytes.subarray(textLo + offs[i], textLo + offs[i + 1]));
      out.strings[e.name] = list;
      out.stringShapes[e.name] = e.shape;
      continue;
    }
    let data: NumArray;
    switch (e.dtype) {
      case "f4": data = typed(bytes, lo, count, 4, Float32Array); break;
      case "f2": data = f16ToF32(typed(bytes, lo, count, 2, Uint16Array)); break;
      case "i4": data = typed(bytes, lo, count, 4, Int32Array); break;
      case "i2": data = typed(bytes, lo, count, 2, Int16Array); break;
      case "u4": data = typed(bytes, lo, count, 4, Uint32Array); break;
      case "u2": data = typed(bytes, lo, count, 2, Uint16Array); break;
      case "u1": case "b1": data = typed(bytes, lo, count, 1, Uint8Array); break;
      default: throw new Error(`unknown dtype ${(e as Entry).dtype} for ${e.name}`);
    }
    if (ITEM[e.dtype] * count !== e.nbytes) throw new Error(`payload entry ${e.name}: ${e.nbytes} bytes for ${count} items`);
    out.arrays[e.name] = { data, shape: e.shape, dtype: e.dtype };
  }
  return out;
}

/** Layers 0..n-1 WITHOUT softmax attention for the decoder ("step") or prompt stack (empty when
 * the meta does not list the attention layers: then every layer has attention). */
export function noAttentionLayers(meta: TraceMeta, stack: "step" | "prompt", n: number = meta.n_layers ?? 0): Set<number> {
  const att = stack === "prompt" ? meta.prompt_attention_layers : meta.attention_layers;
  const out = new Set<number>();
  if (!Array.isArray(att)) return out;
  const has = new Set(att);
  for (let l = 0; l < n; l++) if (!has.has(l)) out.add(l);
  return out;
}

/** Row `i` of a 2-D array (a view, no copy). */
export function row(a: NDArray, i: number): NumArray {
  const w = a.shape[1];
  return a.data.subarray(i * w, (i + 1) * w) as NumArray;
}
