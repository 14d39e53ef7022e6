// Builds the console into api/console_build/, which the API serves at `/`
// (api/console.py). `npm run dev` serves it with hot reload and sends the
// API's paths to `attendwise serve` on 127.0.0.1:8000.
import { defineConfig } from "vite";

const api = "http://127.0.0.1:8000";
const apiPaths = ["/auth", "/graphql", "/me", "/users", "/sessions", "/checkin", "/checkins", "/series", "/.well-known"];

export default defineConfig({
  base: "/",
  build: {
    outDir: "../api/console_build", // relative to this folder
    emptyOutDir: true,
    target: "es2022",
    sourcemap: false,
  },
  server: {
    proxy: Object.fromEntries(apiPaths.map((p) => [p, { target: api, ws: true }])),
  },
});
