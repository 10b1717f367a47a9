// React hooks over the API: live lists (watch streams), one-shot loads, and server field errors.

import { type RefObject, useCallback, useEffect, useState } from "react";
import { ApiError, getJson, messageOf } from "./client";
import type { Meta, WatchEvent } from "./types";

export interface WatchedList<T> {
  items: T[];
  /** True once rows arrived, or the stream has been open a moment with none (then the list is empty). */
  loaded: boolean;
  /** Set while the stream is broken; EventSource reconnects with Last-Event-ID by itself. */
  error: string | null;
}

/** The replay of existing rows follows the stream's opening at once; this long without one means none. */
const EMPTY_AFTER_MS = 400;

/**
 * A list kept live by `?watch=true`: the stream replays existing rows as CREATED, then sends each
 * change. EventSource resumes with `Last-Event-ID` after a drop, so nothing is missed; RESET clears.
 */
export function useWatchList<T extends Meta>(path: string): WatchedList<T> {
  const [rows, setRows] = useState<Map<number, T>>(new Map());
  const [loaded, setLoaded] = useState(false);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    setRows(new Map());
    setLoaded(false);
    const sep = path.includes("?") ? "&" : "?";
    const source = new EventSource(`${path}${sep}watch=true`);
    let quiet: ReturnType<typeof setTimeout> | undefined;
    source.onopen = () => {
      setError(null);
      quiet = setTimeout(() => setLoaded(true), EMPTY_AFTER_MS);
    };
    source.onerror = () => setError("live updates interrupted; reconnecting…");
    source.onmessage = (msg: MessageEvent<string>) => {
      setLoaded(true);
      const event = JSON.parse(msg.data) as WatchEvent<T>;
      setRows((prev) => {
        const next = new Map(prev);
        if (event.type === "RESET") return new Map();
        if (!event.data) return prev;
        if (event.type === "DELETED") next.delete(event.data.id);
        else next.set(event.data.id, event.data);
        return next;
      });
    };
    return () => {
      clearTimeout(quiet);
      source.close();
    };
  }, [path]);

  const items = [...rows.values()].sort((a, b) => a.id - b.id);
  return { items, loaded, error };
}

export interface Loaded<T> {
  data: T | null;
  error: ApiError | null;
  loading: boolean;
  reload: () => void;
}

/** GETs `path` once (and again on `reload()`). `path` null skips the request. */
export function useGet<T>(path: string | null): Loaded<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [loading, setLoading] = useState(path !== null);
  const [tick, setTick] = useState(0);

  useEffect(() => {
    if (path === null) return;
    let live = true;
    setLoading(true);
    getJson<T>(path)
      .then((d) => {
        if (!live) return;
        setData(d);
        setError(null);
      })
      .catch((e: unknown) => {
        if (!live) return;
        setError(e instanceof ApiError ? e : new ApiError(0, "NetworkError", messageOf(e)));
      })
      .finally(() => live && setLoading(false));
    return () => {
      live = false;
    };
  }, [path, tick]);

  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { data, error, loading, reload };
}

/** GETs `path` now and every `everyMs` while mounted: for figures that change without a watch event. */
export function usePoll<T>(path: string, everyMs: number): T | null {
  const [data, setData] = useState<T | null>(null);
  useEffect(() => {
    let live = true;
    const load = () =>
      getJson<T>(path)
        .then((d) => live && setData(d))
        .catch(() => {});
    void load();
    const timer = setInterval(() => void load(), everyMs);
    return () => {
      live = false;
      clearInterval(timer);
    };
  }, [path, everyMs]);
  return data;
}

/**
 * A form's submit state: runs `action`, and on failure keeps the server's message next to the
 * field it names (`field`), or as a form-level message when it names none. Inputs are never reset.
 */
export function useSubmit() {
  const [busy, setBusy] = useState(false);
  const [fieldErrors, setFieldErrors] = useState<Record<string, string>>({});
  const [formError, setFormError] = useState<string | null>(null);

  const run = useCallback(async (action: () => Promise<void>): Promise<boolean> => {
    setBusy(true);
    setFieldErrors({});
    setFormError(null);
    try {
      await action();
      return true;
    } catch (e) {
      if (e instanceof ApiError && e.field) setFieldErrors({ [e.field]: e.message });
      else setFormError(messageOf(e));
      return false;
    } finally {
      setBusy(false);
    }
  }, []);

  const clear = useCallback(() => {
    setFieldErrors({});
    setFormError(null);
  }, []);

  return { busy, fieldErrors, formError, run, clear };
}

/** After a refused submit, moves focus (and the scroll position) to the first input marked invalid. */
export function useFocusInvalid(form: RefObject<HTMLFormElement | null>, fieldErrors: Record<string, string>): void {
  useEffect(() => {
    if (Object.keys(fieldErrors).length === 0) return;
    form.current?.querySelector<HTMLElement>('[aria-invalid="true"]')?.focus();
  }, [form, fieldErrors]);
}
