// Bundles the console into dist/ (git-ignored), which the desk serves:
// dist/index.html at /, the rest under /console/. `npm run build`.
import { copyFile, mkdir, rm } from "node:fs/promises";
import { build } from "esbuild";

const out = "dist";
await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
await build({
  entryPoints: ["src/main.ts"],
  bundle: true,
  format: "esm",
  target: ["chrome110", "firefox115", "safari16"],
  minify: true,
  sourcemap: "linked",
  legalComments: "linked",
  outfile: `${out}/app.js`,
  logLevel: "warning",
});
await copyFile("index.html", `${out}/index.html`);
await copyFile("app.css", `${out}/app.css`);
console.log(`console: built ${out}/ (index.html, app.js, app.css)`);
