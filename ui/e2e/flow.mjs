// The UI's browser test: drives Debian's headless Chromium (playwright-core) through an operator's day
// against a real `ferrostack start` with a real llama.cpp deployment. scripts/ui-e2e.sh sets it up.
//
// Env: BASE_URL, ADMIN_PASSWORD, SMOLLM2_GGUF, LLAMA_SERVER, ARTIFACTS (screenshot folder),
//      CHROMIUM (default /usr/bin/chromium).

import { mkdirSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const BASE_URL = env("BASE_URL");
const ADMIN_PASSWORD = env("ADMIN_PASSWORD");
const MODEL_PATH = env("SMOLLM2_GGUF");
const LLAMA_SERVER = env("LLAMA_SERVER");
const ARTIFACTS = env("ARTIFACTS");
const MODEL = "smollm2";
const CUSTOM_MODEL = "smollm2-own-command";
const BACKEND = "llama-cpp-custom";
const RUNNING_TIMEOUT_MS = 240_000;

// tests/it/workers.rs `llama_backend_yaml`: llama.cpp's server as a host process on CPU.
const BACKEND_YAML = `backend_name: ${BACKEND}
default_version: cpu
default_run_command: "-m {{model_path}} --host 127.0.0.1 --port {{port}} --alias {{model_name}} -c 2048 -t 2 -np 2"
health_check_path: /v1/models
parameter_format: space
version_configs:
  cpu:
    image_name: ghcr.io/ggml-org/llama.cpp:server
    entrypoint: ${LLAMA_SERVER}
    custom_framework: cpu
`;

mkdirSync(ARTIFACTS, { recursive: true });
const started = Date.now();
const log = (msg) => console.log(`[ui-e2e ${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
  ],
});
const WIDE = { width: 1440, height: 900 };
const page = await browser.newPage({ viewport: WIDE });
page.setDefaultTimeout(20_000);
const consoleErrors = [];
page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));

// Tests never leave this machine: the hubs' public APIs are answered here, in the shapes the hubs
// answer (ui/src/pages/deployments/hub.ts), and anything else off-machine is refused.
const HF_SEARCH = [
  { id: "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", downloads: 4242, tags: ["gguf"], library_name: "gguf" },
  { id: "HuggingFaceTB/SmolLM2-135M-Instruct", downloads: 9001, tags: ["transformers"] },
];
const HF_TREE = [
  { type: "file", path: "README.md", size: 1000 },
  { type: "file", path: "smollm2-135m-instruct-q8_0.gguf", size: 144_000_000 },
];
const offMachine = [];
await page.route(
  (url) => !["127.0.0.1", "localhost", "[::1]"].includes(url.hostname),
  async (route) => {
    const url = new URL(route.request().url());
    const cors = { "access-control-allow-origin": "*" };
    if (url.hostname === "huggingface.co" && url.pathname === "/api/models") {
      return route.fulfill({ json: HF_SEARCH, headers: cors });
    }
    if (url.hostname === "huggingface.co" && url.pathname.endsWith("/tree/main")) {
      return route.fulfill({ json: HF_TREE, headers: cors });
    }
    offMachine.push(url.href);
    return route.abort("blockedbyclient");
  },
);

// The last answers of POST /v2/model-evaluations, for the message when a compatibility wait fails.
const evaluations = [];
page.on("response", async (r) => {
  if (!r.url().endsWith("/v2/model-evaluations")) return;
  const body = await r.text().catch((e) => `(body unreadable: ${e})`);
  evaluations.push(`${r.status()} ${body.slice(0, 600)}`);
  if (evaluations.length > 4) evaluations.shift();
});

/** Waits for the form's compatibility check to say "Compatible"; else fails with what it shows and why. */
async function compatible(form) {
  const panel = form.getByTestId("compatibility");
  try {
    await panel.getByText("Compatible", { exact: true }).waitFor({ timeout: 30_000 });
  } catch (e) {
    const shown = await panel.innerText({ timeout: 1_000 }).catch(() => "(no compatibility panel)");
    const sent = await page.evaluate(() => document.querySelector("form")?.innerText.slice(0, 400) ?? "");
    throw new Error(
      `${e.message}\ncompatibility panel: ${JSON.stringify(shown)}\nform: ${JSON.stringify(sent)}` +
        `\nlast evaluations:\n${evaluations.join("\n") || "(none answered)"}`,
    );
  }
}

let shot = 0;
/** Every state badge and label chip shows its whole label (no "REA…"): its label is as wide as its text. */
async function assertBadgesWhole(where) {
  const cut = await page.evaluate(() =>
    [...document.querySelectorAll("[data-state]")]
      .concat([...document.querySelectorAll("[data-label]")])
      .map((b) => b.querySelector(".mantine-Badge-label") ?? b)
      .filter((l) => l.scrollWidth > l.clientWidth + 1)
      .map((l) => l.textContent),
  );
  if (cut.length) throw new Error(`${where}: truncated badges: ${cut.join(", ")}`);
}

/**
 * At 1024 px wide the page fits: no horizontal scroll, no table reaching past the window, every
 * badge and label chip whole. Back to 1440 px afterwards.
 */
async function fitsAt1024(where) {
  await page.setViewportSize({ width: 1024, height: 768 });
  try {
    await page.waitForFunction(() => window.innerWidth === 1024);
    const over = await page.evaluate(() => {
      const width = document.documentElement.clientWidth;
      const out = [];
      if (document.documentElement.scrollWidth > width + 1) {
        out.push(`the page scrolls sideways (${document.documentElement.scrollWidth} px wide)`);
      }
      for (const el of document.querySelectorAll("table, [data-label]")) {
        const right = el.getBoundingClientRect().right;
        if (right > width + 1)
          out.push(`${el.getAttribute("aria-label") ?? el.textContent} ends at ${Math.round(right)} px`);
      }
      return out;
    });
    if (over.length) throw new Error(`${where} at 1024 px: ${over.join("; ")}`);
    await assertBadgesWhole(`${where} at 1024 px`);
    await screenshot(`${where}-1024px`);
  } finally {
    await page.setViewportSize(WIDE);
  }
}

async function screenshot(name) {
  shot += 1;
  const file = join(ARTIFACTS, `${String(shot).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  log(`screenshot ${file}`);
}

async function nav(label, heading) {
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: label }).click();
  await page.getByRole("heading", { level: 2, name: heading ?? label }).waitFor();
}

/** Picks `option` in the Mantine Select labelled `label` (a combobox with a listbox of options). */
async function choose(scope, label, option) {
  await scope.getByRole("textbox", { name: label, exact: true }).click();
  await page.getByRole("option", { name: option, exact: true }).click();
}

async function valueBecomes(input, want, timeoutMs = 10_000) {
  const until = Date.now() + timeoutMs;
  let now = await input.inputValue();
  while (now !== want && Date.now() < until) {
    await page.waitForTimeout(100);
    now = await input.inputValue();
  }
  if (now !== want) throw new Error(`expected ${JSON.stringify(want)}, the field holds ${JSON.stringify(now)}`);
}

let currentStep = "(before the first step)";
async function step(name, fn) {
  currentStep = name;
  log(`step: ${name}`);
  await fn();
}

async function moreActions(action, model = MODEL) {
  await page.getByRole("button", { name: `More actions for ${model}` }).click();
  await page.getByRole("menuitem", { name: action }).click();
}

const deployment = (model = MODEL) => page.locator(`tr[data-deployment="${model}"]`);

/** Waits until the input's own error message (aria-describedby …-error) contains `text`. */
async function fieldError(input, text) {
  await input.and(page.locator('[aria-invalid="true"]')).waitFor();
  const errorId = (await input.getAttribute("aria-describedby"))?.split(" ").find((id) => id.endsWith("-error"));
  await page.locator(`[id="${errorId}"]`).getByText(text).waitFor();
}

try {
  await step("log in", async () => {
    await page.goto(BASE_URL);
    await page.waitForURL(/\/login$/);
    await page.getByLabel("Password").first().fill("wrong-password");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("alert").waitFor();
    await screenshot("login-refused");
    await page.getByLabel("Password").first().fill(ADMIN_PASSWORD);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { level: 2, name: "Dashboard" }).waitFor();
    await page.getByRole("group", { name: "Workers" }).getByText("1 ready").waitFor({ timeout: 30_000 });
    await screenshot("dashboard");
  });

  await step("import a backend by YAML", async () => {
    await nav("Inference backends");
    await page.getByRole("button", { name: "Import YAML" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.getByRole("textbox", { name: "Backend YAML" }).fill(BACKEND_YAML);
    await dialog.getByRole("button", { name: "Import" }).click();
    await dialog.waitFor({ state: "detached" });
    // Its command has no {{api_key}}: the server's warning stays on screen until dismissed.
    await page.getByText(`${BACKEND}: open to the worker's network`).waitFor();
    await page.getByRole("button", { name: "Dismiss warning" }).click();
    await page.locator(`[data-backend="${BACKEND}"]`).waitFor();
    await screenshot("backends");
    await assertBadgesWhole("backends");
  });

  await step("deploy: invalid input shows the server's field message and keeps the form", async () => {
    await nav("Deployments");
    await page.getByRole("button", { name: "Deploy model" }).click();
    const form = page.getByRole("form", { name: "Deploy a model" });
    await form.getByLabel("Model path").fill(MODEL_PATH);
    await choose(form, "Backend", BACKEND);
    // The version follows the backend the user picked, not the one preselected a moment before.
    await valueBecomes(form.getByRole("textbox", { name: "Backend version", exact: true }), "cpu");
    await form.getByRole("textbox", { name: "Name", exact: true }).fill("bad name!");
    await form.getByTestId("compatibility").waitFor({ timeout: 30_000 });
    await form.getByRole("button", { name: "Deploy" }).click();
    const nameInput = form.getByRole("textbox", { name: "Name", exact: true });
    await fieldError(nameInput, "must be 1-63 characters");
    await page.waitForFunction(() => document.activeElement?.getAttribute("name") === "name");
    if ((await form.getByLabel("Model path").inputValue()) !== MODEL_PATH) throw new Error("the model path was lost");
    const backend = await form.getByRole("textbox", { name: "Backend", exact: true }).inputValue();
    if (backend !== BACKEND) throw new Error(`the backend choice was lost (now ${JSON.stringify(backend)})`);
    await screenshot("deploy-form-field-error");
  });

  await step("deploy form: hub search (answered locally) offers repositories and never blocks the form", async () => {
    const form = page.getByRole("form", { name: "Deploy a model" });
    await page.getByRole("dialog", { name: "Deploy a model" }).getByRole("button", { name: "Close" }).waitFor();
    await form.getByRole("radiogroup", { name: "Source" }).getByText("Hugging Face", { exact: true }).click();
    const repo = form.getByRole("textbox", { name: "Repository" });
    await repo.fill("smollm2");
    // The search settles with the hub's answer and offers it; the typed text stays until one is picked.
    await form.locator('[name="huggingface_repo_id"][data-hub-status="ok"]').waitFor({ timeout: 15_000 });
    await page
      .getByRole("option", { name: /SmolLM2-135M-Instruct-GGUF/ })
      .first()
      .waitFor();
    if ((await repo.inputValue()) !== "smollm2") throw new Error("the repository text was changed by the search");
    log("hub search: ok (answered locally)");
    await page.keyboard.press("Escape");
    await screenshot("deploy-form-hub-search");
    await form.getByRole("radiogroup", { name: "Source" }).getByText("Local path", { exact: true }).click();
    if ((await form.getByLabel("Model path").inputValue()) !== MODEL_PATH) throw new Error("the model path was lost");
  });

  await step("deploy the SmolLM2 GGUF by local path", async () => {
    const form = page.getByRole("form", { name: "Deploy a model" });
    await form.getByRole("textbox", { name: "Name", exact: true }).fill(MODEL);
    await compatible(form);
    await screenshot("deploy-form");
    await form.getByRole("button", { name: "Deploy" }).click();
    await form.waitFor({ state: "detached" });
    await deployment().waitFor();
  });

  await step("watch it reach running (live, no reload)", async () => {
    await deployment()
      .getByRole("button", { name: `Show instances of ${MODEL}` })
      .click();
    await deployment().getByTestId("replicas").getByText("1 / 1").waitFor({ timeout: RUNNING_TIMEOUT_MS });
    await page.locator('[data-state="running"]').first().waitFor();
    await screenshot("deployment-running");
    await fitsAt1024("deployments");
  });

  await step("a deployment made elsewhere shows the same backend, and its failure is noticed", async () => {
    // Made through the API as the CLI makes it (no backend_version), with a flag llama-server refuses.
    const made = await page.evaluate(
      async ([path, backend]) => {
        const res = await fetch("/v2/models", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({
            name: "typo",
            source: "local_path",
            local_path: path,
            backend,
            backend_parameters: ["--no-such-flag"],
            replicas: 1,
          }),
        });
        return { status: res.status, body: await res.json() };
      },
      [MODEL_PATH, BACKEND],
    );
    if (made.status !== 200) throw new Error(`POST /v2/models answered ${made.status}: ${JSON.stringify(made.body)}`);
    const notice = page.locator(".mantine-Notification-root").filter({ hasText: "typo failed to start" });
    await notice.getByText("error: invalid argument: --no-such-flag").waitFor({ timeout: 60_000 });
    const backends = await page.locator("tr[data-deployment] [data-testid=backend]").allInnerTexts();
    if (new Set(backends).size !== 1) throw new Error(`the Backend column differs between deployments: ${backends}`);
    const source = await deployment().getByTestId("source").textContent();
    if (!source?.startsWith("\u200e/"))
      throw new Error(`the source path is not kept left to right: ${JSON.stringify(source)}`);
    // What the server read from the GGUF file, under the source.
    const analysis = deployment().getByTestId("analysis");
    await analysis.waitFor({ timeout: 30_000 });
    const read = (await analysis.textContent()) ?? "";
    if (!read.startsWith("llama · llm · context "))
      throw new Error(`the model's analysis is not shown: ${JSON.stringify(read)}`);
    await screenshot("deploy-failed-notice");
    await notice.getByRole("button").first().click();
    await page.evaluate((id) => fetch(`/v2/models/${id}`, { method: "DELETE" }), made.body.id);
    await deployment("typo").waitFor({ state: "detached" });
  });

  await step("chat in the playground and see the streamed answer", async () => {
    await nav("Playground");
    await page.getByLabel("Message").fill("What is the capital of France? Answer in one word.");
    const response = page.waitForResponse((r) => r.url().endsWith("/v1/chat/completions"));
    await page.getByRole("button", { name: "Send" }).click();
    const res = await response;
    if (res.status() === 404) {
      await screenshot("playground-no-gateway");
      throw new Error(
        `POST /v1/chat/completions answered 404: the /v1 gateway is not available on this server (${await res.text()})`,
      );
    }
    if (!res.ok()) throw new Error(`POST /v1/chat/completions answered ${res.status()}: ${await res.text()}`);
    const type = res.headers()["content-type"] ?? "";
    if (!type.includes("text/event-stream")) throw new Error(`chat was not streamed (content-type ${type})`);
    const answer = page.locator('[data-testid="chat-log"] [data-role="assistant"]:not([data-streaming])');
    await answer.waitFor({ timeout: 60_000 });
    const text = (await answer.innerText()).replace(/^assistant\s*/, "").trim();
    if (!text) throw new Error("the assistant's answer is empty");
    log(`answer: ${JSON.stringify(text)}`);
    await page.getByRole("button", { name: "View code" }).click();
    await page.getByRole("dialog").getByText("/v1/chat/completions").first().waitFor();
    await screenshot("playground-code");
    await page.keyboard.press("Escape");
    await screenshot("playground");
  });

  await step("view instance logs (follow)", async () => {
    await nav("Deployments");
    await deployment()
      .getByRole("button", { name: `Show instances of ${MODEL}` })
      .click();
    await page.getByRole("table", { name: "Instances" }).getByRole("button", { name: "Logs" }).first().click();
    const logs = page.getByTestId("log-view");
    await logs.getByText(/\S/).first().waitFor({ timeout: 30_000 });
    const text = await logs.innerText();
    if (!/llama|model|server/i.test(text)) throw new Error(`unexpected log text: ${text.slice(0, 300)}`);
    await screenshot("instance-logs");
    await page.keyboard.press("Escape");
  });

  await step("scale to 0", async () => {
    await moreActions("Scale");
    const dialog = page.getByRole("dialog");
    await dialog.getByLabel("Replicas").fill("0");
    await dialog.getByRole("button", { name: "Scale" }).click();
    await dialog.waitFor({ state: "detached" });
    await deployment().getByTestId("replicas").getByText("0 / 0").waitFor({ timeout: 60_000 });
    await deployment().getByText("stopped").waitFor();
    await page.getByText("No instances (replicas 0").waitFor({ timeout: 60_000 });
    await screenshot("scaled-to-zero");
  });

  await step("delete", async () => {
    await moreActions("Delete");
    await page.getByRole("dialog").getByRole("button", { name: "Delete" }).click();
    await deployment().waitFor({ state: "detached" });
    await page.getByText("Nothing deployed yet.").waitFor();
    await screenshot("deleted");
  });

  await step("deploy with the Custom backend: own command, parameters checked like the server", async () => {
    await page.getByRole("button", { name: "Deploy model" }).click();
    const form = page.getByRole("form", { name: "Deploy a model" });
    await form.getByLabel("Model path").fill(MODEL_PATH);
    await form.getByRole("textbox", { name: "Name", exact: true }).fill(CUSTOM_MODEL);
    await choose(form, "Backend", "Custom (own image and command)");
    await form.getByTestId("custom-backend").waitFor();
    const params = form.getByRole("textbox", { name: "Backend parameters" });
    await params.fill("--ctx-size=512\n--alias 'open");
    await form.getByRole("button", { name: "Deploy" }).click();
    const command = form.getByRole("textbox", { name: "Run command" });
    await fieldError(command, "required with the Custom backend");
    await fieldError(params, "unterminated single quote");
    await screenshot("deploy-form-custom-errors");
    await command.fill(
      `${LLAMA_SERVER} -m {{model_path}} --host 127.0.0.1 --port {{port}} --alias {{model_name}} -t 1 -np 1`,
    );
    // Spelled as llama-server takes it (it refuses `--ctx-size=512`: tools/llama-server is as strict).
    await params.fill("--ctx-size\n512\n--batch-size\n64");
    await form.getByTestId("params-reading").getByText("--ctx-size 512 · --batch-size 64").waitFor();
    // The Custom backend names no framework: on this CPU-only worker it runs with CPU offloading allowed.
    await form.getByText("Allow CPU offloading", { exact: true }).click();
    await compatible(form);
    await screenshot("deploy-form-custom");
    await form.getByRole("button", { name: "Deploy" }).click();
    await form.waitFor({ state: "detached" });
    await deployment(CUSTOM_MODEL).getByTestId("replicas").getByText("1 / 1").waitFor({ timeout: RUNNING_TIMEOUT_MS });
    await deployment(CUSTOM_MODEL)
      .getByRole("button", { name: `Show instances of ${CUSTOM_MODEL}` })
      .click();
    // The worker ran the deployment's own command with its parameters appended as entered.
    const ran = page.getByTestId("instance-command").filter({ hasText: `--alias ${CUSTOM_MODEL}` });
    await ran.getByText("--ctx-size 512 --batch-size 64").waitFor();
    log(`custom command: ${await ran.innerText()}`);
    await screenshot("custom-running");
    await moreActions("Delete", CUSTOM_MODEL);
    await page.getByRole("dialog").getByRole("button", { name: "Delete" }).click();
    await deployment(CUSTOM_MODEL).waitFor({ state: "detached" });
  });

  await step("the other pages", async () => {
    await nav("Workers & GPUs");
    await page.locator("tr[data-worker]").first().waitFor();
    await page.getByTestId("add-worker-command").getByText("ferrostack worker --server-url").waitFor();
    // The browser reaches the server on loopback: the command says to put the server's address in.
    await page.getByTestId("add-worker-command").getByText("--server-url http://SERVER-ADDRESS:").waitFor();
    await page.getByTestId("add-worker-server-url").getByText("replace SERVER-ADDRESS").waitFor();
    // Per GPU, a bar of what is claimed and what is free: the simulated GPU has 2 GB in use
    // outside the cluster (scripts/ui-e2e.sh), which the bar shows apart from the free rest.
    const bar = page.locator("[data-testid^='gpu-claims-']").first();
    await bar.getByText(/used outside the cluster 2\.0 GiB · free 22\.0 GiB/).waitFor();
    await bar.locator("[data-segment='external']").waitFor();
    // A long label shows whole, at 1440 and at 1024 px.
    await page
      .locator("tr[data-worker]")
      .first()
      .getByRole("button", { name: /^Actions for worker / })
      .click();
    await page.getByRole("menuitem", { name: "Edit labels" }).click();
    const labels = page.getByRole("form", { name: "Worker labels" });
    await labels.getByLabel("Labels").fill("team=inference-platform-and-friends\nzone=eu-west-1-rack-42-row-7");
    await labels.getByRole("button", { name: "Save" }).click();
    await labels.waitFor({ state: "detached" });
    await page.locator('[data-label="zone"]').waitFor();
    await screenshot("workers");
    await assertBadgesWhole("workers");
    await fitsAt1024("workers");
    await nav("API keys");
    await page.getByRole("button", { name: "Create API key" }).click();
    await page.getByRole("dialog").getByLabel("Name").fill("e2e");
    await page.getByRole("dialog").getByRole("button", { name: "Create" }).click();
    await page.getByTestId("api-key-secret").waitFor();
    await screenshot("api-key-created");
    await page.getByRole("dialog").getByRole("button", { name: "Done" }).click();
    await nav("Users");
    await screenshot("users");
    // A route made through the API (deploying makes one too): its load balancing is chosen here, and
    // the PUT keeps the rest of the route.
    const made = await page.evaluate(async () => {
      const res = await fetch("/v2/model-routes", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ name: "e2e-route", description: "made by the browser test", timeout: 600 }),
      });
      return { status: res.status, body: await res.json() };
    });
    if (made.status !== 200)
      throw new Error(`POST /v2/model-routes answered ${made.status}: ${JSON.stringify(made.body)}`);
    await nav("Routes");
    const route = page.locator('tr[data-route="e2e-route"]');
    await route.getByTestId("targets").getByText("0 / 0").waitFor();
    // A new route balances by prefix (the default); here it is changed to least outstanding.
    await route.getByText("prompt cache most likely holds the request's prefix", { exact: false }).waitFor();
    await choose(route, "Load balancing of e2e-route", "Least outstanding");
    await route.getByText("The instance with the fewest requests in flight", { exact: false }).waitFor();
    const saved = await page.evaluate((id) => fetch(`/v2/model-routes/${id}`).then((r) => r.json()), made.body.id);
    if (saved.load_balancing !== "least_outstanding" || saved.timeout !== 600 || saved.description !== made.body.description)
      throw new Error(`the route after the change: ${JSON.stringify(saved)}`);
    await screenshot("routes");
    await fitsAt1024("routes");
    await page.evaluate((id) => fetch(`/v2/model-routes/${id}`, { method: "DELETE" }), made.body.id);
    await route.waitFor({ state: "detached" });
    await nav("Usage");
    // The playground chat above went through the gateway: its tokens are counted for the model, by session.
    await page.getByTestId("usage-table").getByRole("rowheader", { name: MODEL, exact: true }).waitFor();
    await page.getByRole("img", { name: /^Tokens per day/ }).waitFor();
    await screenshot("usage");
    await page.getByRole("radiogroup", { name: "Split by" }).getByText("API key", { exact: true }).click();
    await page.getByTestId("usage-table").getByRole("rowheader", { name: "session (no API key)" }).waitFor();
    await screenshot("usage-by-key");
    await nav("Dashboard");
    await page.getByRole("img", { name: /^Tokens per day, last 31 days: 1 requests/ }).waitFor();
    await screenshot("dashboard-usage");
  });

  if (offMachine.length) log(`refused off-machine requests: ${offMachine.join(" ")}`);
  log(`passed; screenshots in ${ARTIFACTS}`);
  if (consoleErrors.length) log(`browser console errors (not failures): ${consoleErrors.join(" | ")}`);
} catch (e) {
  await screenshot("failure").catch(() => {});
  const why = `step "${currentStep}": ${e instanceof Error ? e.message : e}`;
  console.error(`[ui-e2e] FAILED in ${why}`);
  // The script prints this again after the server log, so the last lines of a CI log say what failed.
  await writeFile(`${ARTIFACTS}/failure.txt`, `${why}\n`).catch(() => {});
  if (consoleErrors.length) console.error(`browser console errors: ${consoleErrors.join(" | ")}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
