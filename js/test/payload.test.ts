import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { decodePayload, f16ToF32, row } from "../src/payload";

// golden.cvw is written by make_payload_fixture.py (Python's encoder); pytest checks that
// payload.py still produces exactly these bytes, so both twins agree on one file.
const golden = readFileSync(resolve(__dirname, "fixtures/golden.cvw"));

describe("decodePayload", () => {
  const p = decodePayload(new Uint8Array(golden));

  it("reads meta and every numeric dtype", () => {
    expect(p.meta).toEqual({ model_name: "golden", n: 3, nested: { x: [1, 2] } });
    expect(p.arrays.f4.shape).toEqual([2, 3]);
    expect(Array.from(p.arrays.f4.data)).toEqual([0, 0.25, 0.5, 0.75, 1, 1.25]);
    expect(Array.from(row(p.arrays.f4, 1))).toEqual([0.75, 1, 1.25]);
    expect(Array.from(p.arrays.i4.data)).toEqual([-1, 2, 2 ** 31 - 1]);
    expect(p.arrays.i2.shape).toEqual([1, 2]);
    expect(Array.from(p.arrays.i2.data)).toEqual([-7, 7]);
    expect(Array.from(p.arrays.u2.data)).toEqual([0, 65535]);
    expect(Array.from(p.arrays.b1.data)).toEqual([1, 0, 1]);
    expect(p.arrays.i8.dtype).toBe("i4"); // int64 is narrowed on the wire
    expect(Array.from(p.arrays.i8.data)).toEqual([5, -6]);
  });

  it("widens float16 exactly, including subnormals, inf and nan", () => {
    const f2 = Array.from(p.arrays.f2.data);
    expect(f2.slice(0, 4)).toEqual([0, 1, -2.5, 65504]);
    expect(f2[4]).toBeCloseTo(5.96e-8, 9); // 6e-8 rounds to the subnormal 2^-24
    expect(f2[5]).toBe(Infinity);
    expect(Number.isNaN(f2[6])).toBe(true);
  });

  it("reads string lists (UTF-8, astral, empty) with their shapes", () => {
    expect(p.strings.tokens).toEqual(["Why", " is", " the", " sky", " blue", "?", "é", "🙂", ""]);
    expect(p.strings.alts).toEqual(["a", "bb", "ccc", "Ω"]);
    expect(p.stringShapes.alts).toEqual([2, 2]);
  });

  it("decodes from a DataView at an odd byte offset (copying misaligned arrays)", () => {
    const shifted = new Uint8Array(golden.length + 3);
    shifted.set(golden, 3);
    const q = decodePayload(new DataView(shifted.buffer, 3, golden.length));
    expect(Array.from(q.arrays.f4.data)).toEqual(Array.from(p.arrays.f4.data));
    expect(q.strings.tokens).toEqual(p.strings.tokens);
  });

  it("rejects a wrong magic and a truncated payload", () => {
    const bad = new Uint8Array(golden);
    bad[0] = 0;
    expect(() => decodePayload(bad)).toThrow(/magic/);
    expect(() => decodePayload(new Uint8Array(golden).slice(0, golden.length - 40))).toThrow(/truncated/);
  });
});

describe("f16ToF32", () => {
  it("matches known bit patterns", () => {
    const bits = new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x0001, 0x8000, 0xfc00]);
    const f = Array.from(f16ToF32(bits));
    expect(f.slice(0, 4)).toEqual([1, -2, 65504, 2 ** -24]);
    expect(Object.is(f[4], -0)).toBe(true);
    expect(f[5]).toBe(-Infinity);
  });
});
