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
