// The form's reading of backend parameters and run commands must match the server's
// (src/backends/params.rs, shell.rs, render.rs): these cases are the Rust tests' own.

import { describe, expect, it } from "vitest";
import {
  describeParams,
  isFlag,
  paramItems,
  paramsProblem,
  paramText,
  parseParams,
  runCommandProblem,
  shellJoin,
  splitWords,
} from "./command";

describe("parseParams", () => {
  it("reads the three forms alike", () => {
    for (const form of [["--max-model-len=8192"], ["--max-model-len 8192"], ["--max-model-len", "8192"]]) {
      expect(parseParams(form), JSON.stringify(form)).toEqual([{ flag: "--max-model-len", values: ["8192"] }]);
    }
  });

  it("splits several flags on one line and keeps multi-value flags", () => {
    expect(parseParams(["--tensor-parallel-size 2 --lora-modules a=/p1 b=/p2", "--flag"])).toEqual([
      { flag: "--tensor-parallel-size", values: ["2"] },
      { flag: "--lora-modules", values: ["a=/p1", "b=/p2"] },
      { flag: "--flag", values: [] },
    ]);
  });

  it("treats negative numbers as values and keeps non-flag items whole", () => {
    expect(parseParams(["--temp -0.5", "--seed", "-1"])).toEqual([
      { flag: "--temp", values: ["-0.5"] },
      { flag: "--seed", values: ["-1"] },
    ]);
    expect(parseParams(["/models/my model"])).toEqual([{ flag: null, values: ["/models/my model"] }]);
  });

  it("keeps quoted and JSON values whole", () => {
    expect(parseParams([`--hf-overrides '{"a": 1}'`])).toEqual([{ flag: "--hf-overrides", values: ['{"a": 1}'] }]);
    expect(parseParams([`--hf-overrides={"a": "b c", "d": [1, 2]}`])).toEqual([
      { flag: "--hf-overrides", values: ['{"a": "b c", "d": [1, 2]}'] },
    ]);
    expect(parseParams([`--x={"q": "}\\""} --y 1`])).toEqual([
      { flag: "--x", values: ['{"q": "}\\""}'] },
      { flag: "--y", values: ["1"] },
    ]);
    expect(parseParams(['--name "two words"'])).toEqual([{ flag: "--name", values: ["two words"] }]);
  });

  it("reads a pasted command line with continuations", () => {
    expect(parseParams(["--a 1 \\\n  --b 2 \\"])).toEqual([
      { flag: "--a", values: ["1"] },
      { flag: "--b", values: ["2"] },
    ]);
  });

  it("refuses what the server refuses, with its message", () => {
    const cases: [string, string][] = [
      ["--a 'open", `backend parameter "--a 'open": unterminated single quote starting at column 5`],
      ['--x={"a": 1', 'backend parameter "--x={\\"a\\": 1": JSON value after "=" is never closed'],
      ["--=v", 'backend parameter "--=v": flag "--" has no name'],
    ];
    for (const [item, message] of cases) expect(() => parseParams([item])).toThrow(message);
    // A lone trailing backslash is a continuation, stripped like the server does.
    expect(parseParams(["--a \\"])).toEqual([{ flag: "--a", values: [] }]);
  });
});

describe("isFlag", () => {
  it("matches the server's rule", () => {
    const cases: [string, boolean][] = [
      ["--a", true],
      ["-a", true],
      ["-", false],
      ["--", false],
      ["-1", false],
      ["-0.5", false],
      ["-1e3", false],
      ["-inf", false],
      ["a", false],
      ["", false],
    ];
    for (const [word, flag] of cases) expect(isFlag(word), word).toBe(flag);
  });
});

describe("splitWords", () => {
  it("splits like sh without expanding", () => {
    expect(splitWords(`serve "a b" 'c d' e\\ f && g`)).toEqual(["serve", "a b", "c d", "e f", "&&", "g"]);
    expect(splitWords('"x\\"y\\n"')).toEqual(['x"y\\n']);
    expect(splitWords("a \\\n b")).toEqual(["a", "b"]);
  });

  it("names an unterminated quote or a trailing backslash", () => {
    expect(() => splitWords('a "b')).toThrow("unterminated double quote starting at column 3");
    expect(() => splitWords("a \\")).toThrow("trailing backslash at column 3 escapes nothing");
  });
});

describe("paramItems / paramText", () => {
  it("sends one item per line, drops blanks, joins continuation lines", () => {
    expect(paramItems("  --ctx-size 4096\n\n--threads=2\r\n--seed\n-1\n")).toEqual([
      "--ctx-size 4096",
      "--threads=2",
      "--seed",
      "-1",
    ]);
    expect(paramItems("--a 1 \\\n  --b 2\n--c")).toEqual(["--a 1 \\\n--b 2", "--c"]);
    expect(paramItems("--a \\")).toEqual(["--a \\"]);
    expect(paramItems("")).toEqual([]);
  });

  it("round-trips a stored list", () => {
    const items = ["--ctx-size 4096", "--threads=2"];
    expect(paramItems(paramText(items))).toEqual(items);
    expect(paramText(undefined)).toBe("");
  });

  it("says what is wrong and how the rest reads", () => {
    expect(paramsProblem("--ok 1\n--bad 'x")).toContain("unterminated single quote");
    expect(paramsProblem("--ok 1")).toBeNull();
    expect(describeParams("/path\n--ctx-size=4096\n--seed\n-1")).toBe('"/path" · --ctx-size 4096 · --seed -1');
    // A lone word after a flag is that flag's value, as on the server.
    expect(describeParams("--seed\n-1\n/path")).toBe("--seed -1 /path");
  });
});

describe("runCommandProblem", () => {
  it("accepts the built-in placeholders and the deployment's variables", () => {
    expect(runCommandProblem("llama-server -m {{model_path}} --port {{ port }} --alias {{model_name}}", {})).toBeNull();
    expect(runCommandProblem("serve --cache {{CACHE_DIR}}", { CACHE_DIR: "/tmp" })).toBeNull();
    expect(runCommandProblem(`serve --json '{"a": {"b": 1}}'`, {})).toBeNull();
  });

  it("refuses unknown placeholders, unsplittable commands and an empty one", () => {
    expect(runCommandProblem("serve {{model}}", {})).toBe(
      "unknown placeholder {{model}}; use one of model_path, model_name, port, worker_ip, gpu_count, gpu_ids or a variable from the environment (none set)",
    );
    expect(runCommandProblem("serve {{X}}", { Y: "1" })).toContain("environment (Y)");
    expect(runCommandProblem("serve 'open", {})).toBe(
      "cannot be split into words: unterminated single quote starting at column 7",
    );
    expect(runCommandProblem("  ", {})).toBe("required with the Custom backend");
  });
});

describe("shellJoin", () => {
  it("quotes only what needs it, and splits back to the same words", () => {
    const words = ["/usr/bin/llama-server", "-m", "/models/my model.gguf", "--alias", "it's", "", "--json", '{"a": 1}'];
    expect(shellJoin(["serve", "--port=8080", "a,b"])).toBe("serve --port=8080 a,b");
    expect(shellJoin(words)).toBe(
      `/usr/bin/llama-server -m '/models/my model.gguf' --alias 'it'\\''s' '' --json '{"a": 1}'`,
    );
    expect(splitWords(shellJoin(words))).toEqual(words);
  });
});
