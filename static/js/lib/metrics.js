// Figures for the live panel. Pure module.

/**
 * Numeric fields of a `metrics` event, flattened one level deep
 * ("latency.p50"), sorted by name; `type` and non-numbers are left out,
 * booleans kept as 0/1 would mislead, so they are left out too.
 * @returns {Array<[string, number]>}
 */
export function numericFields(event, prefix = "", depth = 0) {
  const rows = [];
  if (event === null || typeof event !== "object") return rows;
  for (const [key, value] of Object.entries(event)) {
    if (depth === 0 && key === "type") continue;
    const name = prefix ? `${prefix}.${key}` : key;
    if (typeof value === "number" && Number.isFinite(value)) {
      rows.push([name, value]);
    } else if (value && typeof value === "object" && !Array.isArray(value) && depth < 1) {
      rows.push(...numericFields(value, name, depth + 1));
    }
  }
  if (depth === 0) rows.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return rows;
}

/** Short display of a figure: integers as is, others to 1-3 significant decimals. */
export function formatNumber(value) {
  if (!Number.isFinite(value)) return String(value);
  if (Number.isInteger(value)) return String(value);
  const abs = Math.abs(value);
  if (abs >= 100) return value.toFixed(0);
  if (abs >= 1) return value.toFixed(1);
  return value.toPrecision(3);
}

// The stages of a spoken reply, in the order they happen, each from the end
// of the user's speech (the server's `stages_ms` on `response.done`).
export const STAGES = Object.freeze(["end_of_turn", "asr", "brain", "tts", "total"]);

/**
 * Rows for the live panel from a `response.done`'s `stages_ms`: one per stage
 * in STAGES order, labelled "stage.<name>" (i18n.js), the value in ms or null
 * (formatMs shows "–") when the server left that stage out or could not time it.
 * Null when the response carried no timings (a greeting, a typed turn): the
 * panel then keeps the last spoken reply's.
 * @returns {Array<[string, number|null]>|null}
 */
export function stageRows(stagesMs) {
  if (stagesMs === null || typeof stagesMs !== "object" || Array.isArray(stagesMs)) return null;
  return STAGES.map((name) => {
    const value = stagesMs[name];
    return [`stage.${name}`, typeof value === "number" && Number.isFinite(value) ? value : null];
  });
}

/** A figure for the panel: "–" for null (not known), else formatNumber. */
export function formatFigure(value) {
  return value === null || value === undefined ? "–" : formatNumber(value);
}

/** A stage for the panel: whole ms (the server's tenths say nothing to a reader), "–" if not known. */
export function formatMs(value) {
  return Number.isFinite(value) ? String(Math.round(value)) : "–";
}
