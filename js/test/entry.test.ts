// @vitest-environment node
/** The anywidget entry point: only `export default { render }`. anywidget (0.11.0 here, since 0.9)
 * logs "Deprecation Warning … Direct export of a 'render'" on every render when the module has a named
 * `render` export: its loader checks `mod.render` before `mod.default` (manzt/anywidget#395). */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { build } from "esbuild";
import { describe, expect, it } from "vitest";
import * as entry from "../src/index";
import { render } from "../src/render";

const INDEX = resolve(__dirname, "../src/index.ts");

describe("anywidget entry point", () => {
  it("default-exports { render } and nothing else", () => {
    expect(Object.keys(entry)).toEqual(["default"]);
    expect(Object.keys(entry.default)).toEqual(["render"]);
    expect(entry.default.render).toBe(render);
    expect((entry as Record<string, unknown>).render).toBeUndefined();
  });

  it("bundles to a module anywidget loads without the deprecation warning", async () => {
    // the same esbuild options as `npm run build`, in memory
    const out = await build({ entryPoints: [INDEX], bundle: true, format: "esm", target: "es2020", minify: true, write: false, logLevel: "silent" });
    const code = out.outputFiles[0].text;
    expect(code).toMatch(/export\s*\{\s*[\w$]+ as default\s*\};?\s*$/); // one export: default
    const dir = mkdtempSync(join(tmpdir(), "cv-entry-"));
    try {
      const file = join(dir, "widget.mjs");
      writeFileSync(file, code);
      const mod = await import(/* @vite-ignore */ pathToFileURL(file).href);
      // what anywidget's loadWidget does: `if (mod.render) warnRenderDeprecation(...)`, else mod.default
      expect(mod.render).toBeUndefined();
      expect(Object.keys(mod)).toEqual(["default"]);
      expect(typeof mod.default.render).toBe("function");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
