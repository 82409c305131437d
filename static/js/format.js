// Numbers with units, and times in the viewer's time zone. A figure that is not a finite
// number (the API sends NaN and infinities for metrics that overflowed) is shown by name.

const missing = (x) => x === null || x === undefined;

/// "∞", "−∞" or "NaN" for a non-finite number, else null.
export function nonFinite(x) {
  if (typeof x !== "number" || Number.isFinite(x)) return null;
  return Number.isNaN(x) ? "NaN" : x > 0 ? "∞" : "−∞";
}

export function bytes(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : value < 10 ? 2 : 1)} ${units[unit]}`;
}

export function rate(bytesPerSecond) {
  if (!bytesPerSecond) return "";
  if (nonFinite(bytesPerSecond)) return nonFinite(bytesPerSecond);
  const gb = bytesPerSecond / 1e9;
  return gb >= 1 ? `${gb.toFixed(2)} GB/s` : `${(bytesPerSecond / 1e6).toFixed(1)} MB/s`;
}

export function count(n) {
  if (n === null || n === undefined) return "";
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} k`;
  return String(n);
}

export const percent = (x, digits = 2) =>
  missing(x) ? "" : nonFinite(x) ?? `${(x * 100).toFixed(digits)} %`;

export const points = (x) =>
  missing(x) ? "" : nonFinite(x) ?? `${x >= 0 ? "+" : "−"}${Math.abs(x * 100).toFixed(2)} pt`;

export const ms = (x) => (missing(x) ? "" : nonFinite(x) ?? `${x < 10 ? x.toFixed(3) : x.toFixed(1)} ms`);

export const ratio = (x) => (x ? nonFinite(x) ?? `${x.toFixed(2)}×` : "");

export const bits = (x) => (x ? nonFinite(x) ?? `${x.toFixed(2)} bit` : "");

export const seconds = (x) => {
  if (missing(x)) return "";
  if (nonFinite(x)) return nonFinite(x);
  if (x < 60) return `${x.toFixed(x < 10 ? 2 : 1)} s`;
  return `${Math.floor(x / 60)} min ${Math.round(x % 60)} s`;
};

export const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");

export function duration(start, end) {
  if (!start) return "";
  return seconds((new Date(end || Date.now()) - new Date(start)) / 1000);
}

export const sci = (x) => (missing(x) ? "" : x === 0 ? "0" : nonFinite(x) ?? x.toExponential(2));

/// A time estimate, rounded as estimates are: "8 s", "3 min", "1 h 20 min".
export function roughly(x) {
  if (missing(x) || nonFinite(x)) return "";
  if (x < 60) return `${Math.max(1, Math.round(x))} s`;
  if (x < 3600) return `${Math.round(x / 60)} min`;
  return `${Math.floor(x / 3600)} h ${Math.round((x % 3600) / 60)} min`;
}
