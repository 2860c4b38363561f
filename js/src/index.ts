/**
 * anywidget entry point. Only a default export `{ render }`: anywidget (>= 0.9; 0.11.0 here) logs a
 * deprecation warning on every render when the module exports `render` directly (its loader checks
 * `mod.render` before `mod.default`), see https://github.com/manzt/anywidget/pull/395. Nothing else is
 * exported from here; tests import `render` and `VIEWS` from ./render.
 */
import { render } from "./render";

export default { render };
