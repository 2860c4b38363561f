/** Component CSS, themed by JupyterLab's variables (light and dark) with plain fallbacks. */
export const CSS = `
.cv-root { font-family: var(--jp-ui-font-family, system-ui, sans-serif); font-size: var(--jp-ui-font-size1, 13px);
  color: var(--jp-ui-font-color1, #222); background: var(--jp-layout-color0, transparent); }
.cv-root > div, .cv-badge, .cv-timeline, .cv-heatmap, .cv-graph { position: relative; } /* tips are placed relative to their view */
.cv-dashboard { display: flex; flex-direction: column; gap: 10px; }
.cv-row { display: flex; gap: 14px; flex-wrap: wrap; align-items: flex-start; }
.cv-row > * { flex: 1 1 320px; min-width: 0; }
.cv-header { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; margin-bottom: 4px; }
.cv-title { font-weight: 600; }
.cv-muted { color: var(--jp-ui-font-color2, #666); }
.cv-root select, .cv-root button, .cv-root input { font: inherit; color: inherit; background: var(--jp-layout-color1, #fff);
  border: 1px solid var(--jp-border-color1, #bbb); border-radius: 3px; }
.cv-root *:focus-visible { outline: 2px solid var(--jp-brand-color1, #1976d2); }
.cv-legend { display: flex; flex-wrap: nowrap; gap: 6px; align-items: center; font-size: 11px; color: var(--jp-ui-font-color2, #666);
  white-space: nowrap; max-width: 100%; min-width: 0; overflow: hidden; }
.cv-legend > * { flex: none; }
.cv-legend .cv-legend-unit { flex: 0 1 auto; min-width: 0; overflow: hidden; text-overflow: ellipsis; } /* ellipsis as a last resort */
.cv-legend-bar { display: inline-block; width: 120px; height: 10px; border-radius: 2px; }
.cv-heat-legend { gap: 4px; cursor: help; }
.cv-heat-legend .cv-legend-bar { width: 72px; }
.cv-badge { display: flex; flex-wrap: wrap; gap: 4px 14px; align-items: center; }
.cv-badge-head { display: flex; gap: 6px; align-items: center; font-weight: 600; }
.cv-light { display: inline-block; width: 14px; height: 14px; border-radius: 50%; border: 1px solid rgba(0,0,0,.25); }
.cv-green { background: var(--jp-success-color1, #2e7d32); } .cv-yellow { background: var(--jp-warn-color1, #f9a825); }
.cv-red { background: var(--jp-error-color1, #d32f2f); } .cv-pending { background: var(--jp-layout-color3, #bbb); }
.cv-badge-head .cv-verdict { white-space: normal; }
.cv-narrative, .cv-blame, .cv-facts { flex: 1 0 100%; }
.cv-narrative { font-size: 12px; }
.cv-blame { list-style: none; margin: 0; padding: 0; display: flex; flex-direction: column; gap: 2px; }
.cv-root .cv-blame-jump { cursor: pointer; text-align: left; font-size: 12px; padding: 1px 6px;
  border-left: 3px solid var(--jp-warn-color1, #f9a825); }
.cv-blame-run { font-size: 12px; }
.cv-facts { display: flex; flex-wrap: wrap; gap: 4px 10px; align-items: center; }
.cv-facts-title { font-size: 10px; text-transform: uppercase; letter-spacing: .05em; color: var(--jp-ui-font-color3, #999); }
.cv-flags { display: flex; flex-wrap: wrap; gap: 4px 12px; list-style: none; margin: 0; padding: 0; }
.cv-flag { color: var(--jp-ui-font-color2, #666); display: flex; gap: 4px; align-items: center; }
.cv-flag.cv-fired { color: var(--jp-ui-font-color0, #000); font-weight: 600; }
.cv-flag-value { font-variant-numeric: tabular-nums; }
.cv-flag-jump { cursor: pointer; font-weight: normal; font-size: 11px; padding: 0 4px; }
.cv-tokens, .cv-graph-inner { font-family: var(--jp-code-font-family, monospace); font-size: var(--jp-code-font-size, 13px);
  white-space: pre-wrap; word-break: break-word; line-height: 1.9; }
.cv-tokens { max-height: 220px; overflow: auto; position: relative; }
.cv-tok { cursor: pointer; border-radius: 2px; padding: 1px 0; }
.cv-tok:hover { outline: 1px solid var(--jp-border-color1, #999); }
.cv-tok.cv-selected { outline: 2px solid var(--jp-brand-color1, #1976d2); }
.cv-prompt { color: var(--jp-ui-font-color1, #222); }
.cv-gen { font-weight: 600; }
.cv-live { background: var(--jp-layout-color2, #eee); }
.cv-sep { color: var(--jp-ui-font-color3, #999); }
.cv-curve { display: block; cursor: crosshair; }
.cv-progress { position: relative; width: 160px; height: 14px; background: var(--jp-layout-color2, #eee); border-radius: 3px; overflow: hidden; }
.cv-progress[hidden] { display: none; }
.cv-progress.cv-failed .cv-progress-bar { background: var(--jp-error-color1, #d32f2f); }
.cv-progress-bar { position: absolute; left: 0; top: 0; bottom: 0; width: 0; background: var(--jp-brand-color1, #1976d2); transition: width .1s; }
.cv-progress-text { position: relative; font-size: 10px; padding-left: 4px; color: var(--jp-ui-font-color1, #222); }
.cv-tip { position: absolute; z-index: 10; background: var(--jp-layout-color1, #fff); color: var(--jp-ui-font-color1, #222);
  border: 1px solid var(--jp-border-color1, #bbb); border-radius: 4px; padding: 4px 6px; font-size: 11px;
  box-shadow: 0 2px 6px rgba(0,0,0,.2); pointer-events: none; white-space: nowrap; }
.cv-tip[hidden] { display: none; }
.cv-tip-title { font-weight: 600; margin-bottom: 2px; }
.cv-alt { display: flex; gap: 6px; align-items: center; } .cv-alt.cv-chosen { font-weight: 700; }
.cv-alt-text { min-width: 80px; font-family: var(--jp-code-font-family, monospace); }
.cv-alt-bar { display: inline-block; height: 8px; background: var(--jp-brand-color2, #64b5f6); }
.cv-heat-canvas { display: block; cursor: pointer; }
.cv-heat-color option:disabled { color: var(--jp-ui-font-color3, #999); }
.cv-noattn-swatch { display: inline-block; width: 14px; height: 10px; border-radius: 2px; margin-left: 4px;
  background: repeating-linear-gradient(135deg, var(--jp-layout-color2, #e4e4e4) 0 3px, var(--jp-ui-font-color3, #999) 3px 4px); }
/* the attention graph: arcs on a canvas behind the transparent scroll box (outside its scrolled content,
   so redraws never change its scroll height); the text wears a halo in the background colour so no arc
   hides a letter; markers for ends out of view sit in one-line strips at the box's top and bottom edges */
.cv-graph-frame { position: relative; }
.cv-edges { position: absolute; left: 0; top: 0; pointer-events: none; z-index: 0; }
.cv-graph-body { position: relative; z-index: 1; max-height: 320px; overflow: auto; border: 1px solid var(--jp-border-color2, #ddd);
  border-radius: 3px; padding: 4px; background: transparent; }
.cv-graph-inner { padding-top: 18px; --cv-halo: var(--jp-layout-color0, #fff);
  text-shadow: 0 0 1px var(--cv-halo), 0 0 2px var(--cv-halo), 0 0 3px var(--cv-halo), 0 0 4px var(--cv-halo); }
.cv-marker-strip { position: relative; z-index: 1; display: none; gap: 4px; height: 22px; overflow: hidden; white-space: nowrap; }
.cv-graph-frame.cv-scrolls .cv-marker-strip { display: flex; }
.cv-marker-top { align-items: flex-end; }
.cv-marker-bottom { align-items: flex-start; }
.cv-root .cv-marker { flex: none; font-family: var(--jp-code-font-family, monospace); font-size: 11px; line-height: 16px; height: 18px;
  padding: 0 5px; border: 1px solid rgb(25, 118, 210); border-radius: 9px; white-space: pre; overflow: hidden; text-overflow: ellipsis;
  max-width: 100%; cursor: pointer; background: var(--jp-layout-color1, #fff); color: var(--jp-ui-font-color1, #222); }
.cv-root .cv-marker:hover { background: var(--jp-layout-color2, #eee); }
.cv-root .cv-marker-in { border: 1px dashed rgb(230, 97, 0); }
.cv-root .cv-marker-self { border: 2px solid var(--jp-brand-color1, #1976d2); font-weight: 600; }
.cv-root .cv-marker-more { border: 1px dotted var(--jp-border-color1, #999); color: var(--jp-ui-font-color2, #666); }
.cv-root .cv-marker-probe { position: absolute; left: 0; top: 0; visibility: hidden; padding: 0; border: 0; pointer-events: none; }
.cv-tok.cv-flash { animation: cv-flash 1.6s ease-out; }
@keyframes cv-flash { 0%, 45% { background: rgba(255, 193, 7, .75); box-shadow: 0 0 0 3px rgba(255, 193, 7, .9); }
  100% { box-shadow: 0 0 0 3px rgba(255, 193, 7, 0); } }
.cv-graph-legend { margin: 0 0 2px; }
.cv-graph-legend .cv-legend-item { display: inline-flex; gap: 3px; align-items: center; }
.cv-graph-legend .cv-legend-item.cv-off { opacity: .45; }
.cv-graph-info { margin: 2px 0 4px; font-size: 11px; }
.cv-risk { font-weight: 600; font-variant-numeric: tabular-nums; padding: 0 6px; border-radius: 3px; }
.cv-risk-kind { font-weight: normal; font-size: 11px; }
.cv-dataset { display: flex; flex-direction: column; gap: 6px; }
.cv-dataset:focus { outline: none; }
.cv-ds-body { max-height: 340px; overflow: auto; border: 1px solid var(--jp-border-color2, #ddd); border-radius: 3px; }
.cv-ds-table { border-collapse: collapse; width: 100%; table-layout: auto; font-size: 12px; }
.cv-ds-table th { position: sticky; top: 0; z-index: 1; background: var(--jp-layout-color2, #eee); cursor: pointer; user-select: none;
  text-align: left; padding: 3px 6px; white-space: nowrap; border-bottom: 1px solid var(--jp-border-color1, #bbb); }
.cv-ds-table td { padding: 2px 6px; border-bottom: 1px solid var(--jp-border-color3, #eee); vertical-align: top; }
.cv-ds-table .cv-num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.cv-ds-text { max-width: 300px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.cv-ds-answer { max-width: 240px; }
.cv-ds-table td:last-child, .cv-ds-table td { white-space: nowrap; }
.cv-ds-answer { font-family: var(--jp-code-font-family, monospace); }
.cv-ds-row { cursor: pointer; }
.cv-ds-row:hover { background: var(--jp-layout-color2, #f3f3f3); }
.cv-ds-row.cv-ds-selected { background: rgba(33, 150, 243, 0.28); outline: 2px solid var(--jp-brand-color1, #1976d2); outline-offset: -2px; }
.cv-ds-row .cv-light { width: 10px; height: 10px; vertical-align: middle; }
.cv-ok { color: var(--jp-success-color1, #2e7d32); font-weight: 700; } .cv-wrong { color: var(--jp-error-color1, #d32f2f); font-weight: 700; }
.cv-ds-correct-cell { text-align: center; }
.cv-ds-expected-hint { font-weight: normal; color: var(--jp-ui-font-color2, #666); }
.cv-ds-risk-label { display: inline-flex; gap: 4px; align-items: center; }
.cv-ds-status.cv-ds-error { color: var(--jp-error-color1, #d32f2f); }
.cv-ds-dashboard { border-top: 1px solid var(--jp-border-color2, #ddd); padding-top: 8px; }
.cv-ds-dashboard[hidden], .cv-ds-more[hidden] { display: none; }
.cv-lens-info { font-size: 11px; }
`;
