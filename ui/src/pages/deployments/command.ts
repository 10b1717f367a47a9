// Backend parameters and run commands as the server reads them, so the form can say what is wrong
// before submitting. A port of src/backends/shell.rs (split_words), src/backends/params.rs
// (parse_params) and the placeholder rules of src/backends/render.rs; keep them in step.

/** POSIX-shell word splitting without expansion: quotes, backslashes and line continuations. */
export function splitWords(line: string): string[] {
  const words: string[] = [];
  let word = "";
  let inWord = false;
  const chars = [...line];
  for (let i = 0; i < chars.length; i += 1) {
    const c = chars[i] as string;
    const column = i + 1;
    if (/\s/.test(c)) {
      if (inWord) {
        words.push(word);
        word = "";
        inWord = false;
      }
    } else if (c === "\\") {
      i += 1;
      if (i >= chars.length) throw new Error(`trailing backslash at column ${column} escapes nothing`);
      if (chars[i] !== "\n") {
        word += chars[i];
        inWord = true;
      }
    } else if (c === "'") {
      inWord = true;
      for (;;) {
        i += 1;
        if (i >= chars.length) throw new Error(`unterminated single quote starting at column ${column}`);
        if (chars[i] === "'") break;
        word += chars[i];
      }
    } else if (c === '"') {
      inWord = true;
      for (;;) {
        i += 1;
        if (i >= chars.length) throw new Error(`unterminated double quote starting at column ${column}`);
        const inner = chars[i] as string;
        if (inner === '"') break;
        if (inner === "\\") {
          const next = chars[i + 1];
          if (next === "\n") i += 1;
          else if (next === "\\" || next === '"' || next === "$" || next === "`") {
            word += next;
            i += 1;
          } else word += "\\";
        } else word += inner;
      }
    } else {
      word += c;
      inWord = true;
    }
  }
  if (inWord) words.push(word);
  return words;
}

/** A flag: starts with `-`, is not `-` or `--`, and is not a negative number such as `-0.5`. */
export function isFlag(word: string): boolean {
  return word.length > 1 && word.startsWith("-") && word !== "--" && !isNumber(word);
}

function isNumber(word: string): boolean {
  // Rust's f64 parsing: decimal numbers with an optional exponent, inf and NaN.
  return /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(word) || /^[+-]?(inf|infinity|nan)$/i.test(word);
}

/** A flag with its values, or a positional word (`flag` null, one value). */
export interface Param {
  flag: string | null;
  values: string[];
}

/** A parameter the server would refuse, with the message it gives. */
export class ParamError extends Error {
  constructor(
    readonly parameter: string,
    reason: string,
  ) {
    super(`backend parameter ${JSON.stringify(parameter)}: ${reason}`);
  }
}

const MASK = "\u001f";

/** Replaces each `=`-attached JSON value by a marker so that splitting keeps it whole; null when unclosed. */
function maskJsonValues(text: string): { masked: string; json: string[] } | null {
  const chars = [...text];
  let out = "";
  const json: string[] = [];
  let quote: string | null = null;
  let i = 0;
  while (i < chars.length) {
    const c = chars[i] as string;
    if (quote !== null) {
      if (c === quote) quote = null;
    } else if (c === "'" || c === '"') {
      quote = c;
    } else if (c === "=" && (chars[i + 1] === "{" || chars[i + 1] === "[")) {
      const end = jsonEnd(chars, i + 1);
      if (end === null) return null;
      out += `=${MASK}${json.length}${MASK}`;
      json.push(chars.slice(i + 1, end + 1).join(""));
      i = end + 1;
      continue;
    }
    out += c;
    i += 1;
  }
  return { masked: out, json };
}

function jsonEnd(chars: string[], start: number): number | null {
  let depth = 0;
  let inString = false;
  let escaped = false;
  for (let i = start; i < chars.length; i += 1) {
    const c = chars[i];
    if (inString) {
      if (escaped) escaped = false;
      else if (c === "\\") escaped = true;
      else if (c === '"') inString = false;
      continue;
    }
    if (c === '"') inString = true;
    else if (c === "{" || c === "[") depth += 1;
    else if (c === "}" || c === "]") {
      depth -= 1;
      if (depth === 0) return i;
    }
  }
  return null;
}

function unmask(word: string, json: string[]): string {
  if (!word.includes(MASK)) return word;
  return word
    .split(MASK)
    .map((part, index) => (index % 2 === 1 ? (json[Number(part)] ?? `${MASK}${part}${MASK}`) : part))
    .join("");
}

/** One list item's words: shell-like when it starts with a flag, else the item as one word. */
function itemWords(item: string): string[] {
  const first = (item.trim().split(/\s+/)[0] ?? "").split("=")[0] ?? "";
  if (!isFlag(first)) return [item];
  let text = item.replace(/\r\n/g, "\n").trimEnd();
  if (text.endsWith("\\")) text = text.slice(0, -1);
  const masked = maskJsonValues(text);
  if (!masked) throw new ParamError(item, 'JSON value after "=" is never closed');
  let words: string[];
  try {
    words = splitWords(masked.masked);
  } catch (e) {
    throw new ParamError(item, e instanceof Error ? e.message : String(e));
  }
  return words.map((w) => unmask(w, masked.json));
}

/** Parses list items into flags and positional words, as the server does; throws ParamError. */
export function parseParams(items: string[]): Param[] {
  const params: Param[] = [];
  for (const item of items) {
    for (const word of itemWords(item)) {
      const eq = word.indexOf("=");
      const head = eq < 0 ? word : word.slice(0, eq);
      if (eq > 0 && /^-+$/.test(head)) throw new ParamError(item, `flag ${JSON.stringify(head)} has no name`);
      if (isFlag(head)) {
        params.push({ flag: head, values: eq < 0 ? [] : [word.slice(eq + 1)] });
        continue;
      }
      const last = params[params.length - 1];
      if (last && last.flag !== null) last.values.push(word);
      else params.push({ flag: null, values: [word] });
    }
  }
  return params;
}

/**
 * The textarea's lines as the list the server stores: one item per line, blank lines dropped, and a
 * line ending in `\` joined with the next (a pasted multi-line command stays one item).
 */
export function paramItems(text: string): string[] {
  const items: string[] = [];
  let pending = "";
  for (const raw of text.replace(/\r\n/g, "\n").split("\n")) {
    const line = raw.trim();
    if (pending) {
      pending += `\n${line}`;
    } else {
      if (!line) continue;
      pending = line;
    }
    if (!line.endsWith("\\")) {
      items.push(pending);
      pending = "";
    }
  }
  if (pending) items.push(pending);
  return items;
}

/** The stored list back as textarea text. */
export function paramText(items: string[] | null | undefined): string {
  return (items ?? []).join("\n");
}

/** Why the server would refuse these parameters, or null when it reads them. */
export function paramsProblem(text: string): string | null {
  try {
    parseParams(paramItems(text));
    return null;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

/** A short reading of the parameters: how the server splits them into flags and values. */
export function describeParams(text: string): string {
  try {
    return parseParams(paramItems(text))
      .map((p) => (p.flag === null ? JSON.stringify(p.values[0] ?? "") : [p.flag, ...p.values].join(" ")))
      .join(" · ");
  } catch {
    return "";
  }
}

/** The placeholders every run command may use, besides the deployment's environment variables. */
export const BUILT_IN_PLACEHOLDERS = ["model_path", "model_name", "port", "worker_ip", "gpu_count", "gpu_ids"];

/** Why a run command could not be rendered on a worker, or null when it can. */
export function runCommandProblem(command: string, env: Record<string, string>): string | null {
  if (!command.trim()) return "required with the Custom backend";
  try {
    splitWords(command.replace(/\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g, "{{$1}}"));
  } catch (e) {
    return `cannot be split into words: ${e instanceof Error ? e.message : String(e)}`;
  }
  for (const match of command.matchAll(/\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g)) {
    const name = match[1] as string;
    if (!BUILT_IN_PLACEHOLDERS.includes(name) && !(name in env)) {
      const vars = Object.keys(env);
      return `unknown placeholder {{${name}}}; use one of ${BUILT_IN_PLACEHOLDERS.join(", ")} or a variable from the environment (${
        vars.length ? vars.join(", ") : "none set"
      })`;
    }
  }
  return null;
}

/** Words as one shell line that splits back into the same words (for showing a command as run). */
export function shellJoin(words: string[]): string {
  return words.map((w) => (w !== "" && /^[\w@%+=:,./{}-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`)).join(" ");
}
