import { afterEach, describe, expect, it, vi } from "vitest";
import { ApiError, messageOf, postJson, send, setUnauthorizedHandler } from "./client";

afterEach(() => {
  vi.unstubAllGlobals();
  setUnauthorizedHandler(() => {});
});

function answer(status: number, body: string) {
  vi.stubGlobal(
    "fetch",
    vi.fn(() => Promise.resolve(new Response(body, { status, statusText: "Bad Request" }))),
  );
}

describe("send", () => {
  it("turns the server's error envelope into an ApiError naming the field", async () => {
    answer(
      400,
      JSON.stringify({
        code: 400,
        reason: "InvalidInput",
        message: "run_command: required with the Custom backend",
        field: "run_command",
      }),
    );
    const err = await postJson("/v2/models", {}).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ code: 400, reason: "InvalidInput", field: "run_command" });
    expect(messageOf(err)).toBe("run_command: required with the Custom backend");
  });

  it("keeps a non-JSON body as the message, without a field", async () => {
    answer(502, "upstream down");
    const err = (await send("/v2/x").catch((e: unknown) => e)) as ApiError;
    expect(err.code).toBe(502);
    expect(err.message).toBe("upstream down");
    expect(err.field).toBeUndefined();
  });

  it("reports a 401 outside /auth to the app", async () => {
    const onUnauthorized = vi.fn();
    setUnauthorizedHandler(onUnauthorized);
    answer(401, JSON.stringify({ code: 401, reason: "Unauthorized", message: "sign in" }));
    await send("/v2/models").catch(() => {});
    await send("/auth/login").catch(() => {});
    expect(onUnauthorized).toHaveBeenCalledTimes(1);
  });
});
