import { describe, expect, it } from "vitest";
import type { BackendListItem, Model } from "../../api/types";
import {
  clientProblems,
  type DeployState,
  EMPTY,
  editBody,
  formFieldOf,
  fromModel,
  preselectBackend,
  preselectWhy,
  splitFieldErrors,
  suggestName,
  toSpec,
  withDefaultVersion,
} from "./spec";

const state = (over: Partial<DeployState>): DeployState => ({ ...EMPTY, ...over });

describe("toSpec", () => {
  it("sends the GPU memory policy, and the contexts only where fit can apply", () => {
    const cases: [Partial<DeployState>, unknown, unknown][] = [
      [{}, null, null],
      [{ gpu_memory: "fit", fit_concurrency: 4 }, "fit", 4],
      [{ gpu_memory: "fit", fit_concurrency: 1 }, "fit", null],
      [{ gpu_memory: "reserve", fit_concurrency: 4 }, "reserve", null],
      [{ gpu_memory: "", fit_concurrency: 2 }, null, 2],
    ];
    for (const [over, policy, contexts] of cases) {
      const spec = toSpec(state({ local_path: "/m", name: "m", ...over }));
      expect([spec.gpu_memory, spec.fit_concurrency]).toEqual([policy, contexts]);
    }
    const edited = fromModel({
      ...toSpec(state({ local_path: "/m", name: "m", gpu_memory: "fit", fit_concurrency: 3 })),
    } as Model);
    expect([edited.gpu_memory, edited.fit_concurrency]).toEqual(["fit", 3]);
  });

  it("sends only the chosen source's fields and parameters as one item per line", () => {
    const spec = toSpec(
      state({
        source: "huggingface",
        local_path: "/ignored",
        huggingface_repo_id: " Qwen/Qwen3-0.6B ",
        name: "qwen",
        backend: "vLLM",
        backend_version: "0.11.0",
        backend_parameters: "--max-model-len 8192\n\n--enforce-eager",
        worker_selector: "gpu=a100",
        env: "HF_TOKEN=x",
      }),
    );
    expect(spec).toMatchObject({
      name: "qwen",
      source: "huggingface",
      local_path: null,
      huggingface_repo_id: "Qwen/Qwen3-0.6B",
      backend: "vLLM",
      backend_version: "0.11.0",
      backend_parameters: ["--max-model-len 8192", "--enforce-eager"],
      worker_selector: { gpu: "a100" },
      env: { HF_TOKEN: "x" },
      image_name: null,
      run_command: null,
      gpu_selector: null,
    });
  });

  it("sends the Custom backend's image and command and no version", () => {
    const spec = toSpec(
      state({
        local_path: "/m.gguf",
        name: "m",
        backend: "Custom",
        backend_version: "cpu",
        image_name: " ghcr.io/x:1 ",
        run_command: "serve {{model_path}} --port {{port}}",
      }),
    );
    expect(spec.backend).toBe("Custom");
    expect(spec.backend_version).toBeNull();
    expect(spec.image_name).toBe("ghcr.io/x:1");
    expect(spec.run_command).toBe("serve {{model_path}} --port {{port}}");
  });

  it("round-trips a stored deployment", () => {
    const model = {
      id: 3,
      version: 7,
      created_at: "",
      updated_at: "",
      ready_replicas: 1,
      ...toSpec(
        state({
          local_path: "/m.gguf",
          name: "m",
          backend: "Custom",
          run_command: "serve",
          backend_parameters: "--a 1\n--b=2",
          manual_gpus: true,
          gpu_ids: ["w:cuda:0"],
          gpus_per_replica: 1,
        }),
      ),
    } as Model;
    const back = fromModel(model);
    expect(back.backend_parameters).toBe("--a 1\n--b=2");
    expect(back.run_command).toBe("serve");
    expect(back.gpus_per_replica).toBe(1);
    expect(toSpec(back)).toEqual(toSpec(fromModel(model)));
  });

  it("an edit sends back the fields the form does not show, and the form's own as edited", () => {
    const stored = {
      id: 3,
      version: 7,
      created_at: "",
      updated_at: "",
      ready_replicas: 1,
      ...toSpec(state({ local_path: "/m.gguf", name: "m", backend: "llama.cpp" })),
      drain_timeout: 42,
    } as Model;
    const edited = { ...fromModel(stored), description: "now described" };
    const body = editBody(stored, edited) as unknown as Record<string, unknown>;
    expect(body.drain_timeout).toBe(42);
    expect(body.description).toBe("now described");
    expect(body.id).toBeUndefined();
    expect(body.version).toBeUndefined();
  });
});

describe("autoscaling", () => {
  it("sends autoscaling only when on, and an edit keeps it and the schedule", () => {
    expect(toSpec(state({ local_path: "/m", name: "m" })).autoscaling).toBeNull();
    const on = toSpec(state({ local_path: "/m", name: "m", autoscale: true, min_replicas: 0, max_replicas: 3 }));
    expect(on.autoscaling).toEqual({
      min_replicas: 0,
      max_replicas: 3,
      target_requests: 4,
      scale_down_delay_seconds: 300,
    });
    const schedule = {
      enabled: true,
      paused: false,
      baseline_replicas: 0,
      rules: [{ name: "day", start_cron: "0 8 * * *", duration_seconds: 3600, replicas: 2 }],
    };
    const stored = {
      id: 1,
      version: 1,
      created_at: "",
      updated_at: "",
      name: "m",
      source: "local_path",
      local_path: "/m",
      replicas: 0,
      ready_replicas: 0,
      autoscaling: { min_replicas: 0, max_replicas: 2, target_requests: 8, scale_down_delay_seconds: 60 },
      scaling_schedule: schedule,
    } as Model;
    const edited = toSpec(fromModel(stored));
    expect(edited.autoscaling).toEqual(stored.autoscaling);
    expect(edited.scaling_schedule).toEqual(schedule);
    expect(formFieldOf("autoscaling.min_replicas")).toBe("autoscaling.min_replicas");
  });

  it("sends park_seconds only on the way to zero, and an edit keeps it", () => {
    const parked = { local_path: "/m", name: "m", autoscale: true, min_replicas: 0, park_seconds: 600 };
    expect(toSpec(state(parked)).autoscaling?.park_seconds).toBe(600);
    expect(toSpec(state({ ...parked, min_replicas: 1 })).autoscaling).not.toHaveProperty("park_seconds");
    expect(toSpec(state({ ...parked, park_seconds: 0 })).autoscaling).not.toHaveProperty("park_seconds");
    const stored = {
      id: 1,
      version: 1,
      created_at: "",
      updated_at: "",
      name: "m",
      source: "local_path",
      local_path: "/m",
      replicas: 0,
      ready_replicas: 0,
      autoscaling: {
        min_replicas: 0,
        max_replicas: 2,
        target_requests: 8,
        scale_down_delay_seconds: 60,
        park_seconds: 900,
      },
    } as Model;
    expect(toSpec(fromModel(stored)).autoscaling).toEqual(stored.autoscaling);
    expect(formFieldOf("autoscaling.park_seconds")).toBe("autoscaling.park_seconds");
  });
});

describe("formFieldOf / splitFieldErrors", () => {
  it("maps a server field to the input that shows it", () => {
    expect(formFieldOf("name")).toBe("name");
    expect(formFieldOf("backend_parameters[2]")).toBe("backend_parameters");
    expect(formFieldOf("env.HF_TOKEN")).toBe("env");
    expect(formFieldOf("gpu_selector.gpu_ids[0]")).toBe("gpu_selector.gpu_ids");
    expect(formFieldOf("gpu_selector")).toBeNull();
    expect(formFieldOf("cluster_id")).toBeNull();
    expect(formFieldOf("run_command")).toBe("run_command");
  });

  it("keeps the rest for the form-level message", () => {
    expect(splitFieldErrors({ replicas: "must be between 0 and 1024", cluster_id: "no cluster 9" })).toEqual({
      byField: { replicas: "must be between 0 and 1024" },
      other: ["cluster_id: no cluster 9"],
    });
  });
});

describe("clientProblems", () => {
  it("finds what the server or worker would refuse", () => {
    expect(clientProblems(state({ backend: "vLLM", backend_parameters: "--a 'x" }))).toEqual({
      backend_parameters: expect.stringContaining("unterminated single quote") as string,
    });
    expect(clientProblems(state({ backend: "Custom" }))).toEqual({ run_command: "required with the Custom backend" });
    expect(clientProblems(state({ backend: "Custom", run_command: "serve {{nope}}" })).run_command).toContain(
      "unknown placeholder {{nope}}",
    );
    expect(clientProblems(state({ backend: "Custom", run_command: "serve {{X}}", env: "X=1" }))).toEqual({});
    expect(clientProblems(state({ backend: "vLLM" }))).toEqual({});
  });
});

describe("suggestName / preselectBackend", () => {
  it("names a deployment after its source", () => {
    expect(suggestName(state({ local_path: "/models/SmolLM2-135M.Q8_0.gguf" }))).toBe("SmolLM2-135M.Q8_0");
    expect(suggestName(state({ source: "huggingface", huggingface_repo_id: "Qwen/Qwen3 0.6B" }))).toBe("Qwen3-0.6B");
  });

  it("picks llama.cpp for GGUF, VoxBox for speech, SGLang for images, else vLLM", () => {
    const all = ["vLLM", "VoxBox", "llama.cpp", "SGLang"];
    expect(preselectBackend(state({ categories: ["image"] }), all)).toBe("SGLang");
    // A cluster without GPUs: llama.cpp before vLLM, and the form says why.
    expect(preselectBackend(state({ local_path: "/dir" }), all, true)).toBe("llama.cpp");
    expect(preselectWhy(state({ local_path: "/dir" }), all, true)).toBe(
      "Preselected: the cluster has no GPU: llama.cpp runs on CPU.",
    );
    expect(preselectBackend(state({ local_path: "/dir" }), ["vLLM"], true)).toBe("vLLM");
    expect(preselectBackend(state({ local_path: "/a.GGUF" }), all)).toBe("llama.cpp");
    expect(preselectBackend(state({ categories: ["text_to_speech"] }), all)).toBe("VoxBox");
    expect(preselectBackend(state({ local_path: "/dir" }), all)).toBe("vLLM");
    expect(preselectBackend(state({ local_path: "/a.gguf" }), ["my-llama-custom"])).toBe("my-llama-custom");
  });
});

describe("withDefaultVersion", () => {
  const item = (backend_name: string, default_version: string | null, versions: string[]): BackendListItem => ({
    backend_name,
    backend_source: "built_in",
    is_built_in: true,
    default_env: {},
    enabled: true,
    default_version,
    default_backend_param: [],
    common_parameters: [],
    versions: versions.map((version) => ({ version, frameworks: [] })),
  });
  const backends = [item("llama.cpp", "0.11.0", ["0.11.0"]), item("mine", null, ["cpu", "cuda"])];

  it.each([
    ["the backend's default", state({ backend: "llama.cpp" }), "0.11.0"],
    ["its first version when it names no default", state({ backend: "mine" }), "cpu"],
    ["a chosen version stays", state({ backend: "mine", backend_version: "cuda" }), "cuda"],
    ["an unknown backend gets none", state({ backend: "gone" }), ""],
    ["the Custom backend has no version", state({ backend: "Custom" }), ""],
  ])("%s", (_why, s, version) => {
    expect(withDefaultVersion(s, backends).backend_version).toBe(version);
  });

  it("reads the backend the state holds now (the user's pick replaced the preselection)", () => {
    // The preselection's render saw llama.cpp; the user then picked "mine", resetting the version.
    const picked = state({ backend: "mine", backend_version: "" });
    expect(withDefaultVersion(picked, backends)).toMatchObject({ backend: "mine", backend_version: "cpu" });
  });
});
