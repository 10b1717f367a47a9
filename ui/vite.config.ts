import { defineConfig } from "vite";

// React without @vitejs/plugin-react: esbuild compiles JSX with the automatic runtime.
// `npm run dev` proxies the API to a local `ferrostack start` (FERROSTACK_URL, default :8080).
const target = process.env.FERROSTACK_URL ?? "http://127.0.0.1:8080";

export default defineConfig({
  esbuild: { jsx: "automatic" },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    chunkSizeWarningLimit: 800,
    rollupOptions: {
      // Mantine marks its modules "use client" (for React Server Components); meaningless in a SPA bundle.
      onwarn(warning, warn) {
        if (warning.code !== "MODULE_LEVEL_DIRECTIVE") warn(warning);
      },
    },
  },
  server: {
    proxy: Object.fromEntries(["/v1", "/v2", "/auth", "/version"].map((p) => [p, { target, changeOrigin: true }])),
  },
});
