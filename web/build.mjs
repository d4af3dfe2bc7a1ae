// build.mjs bundles the page (src/main.ts → dist/app.js, with index.html
// beside it) and the browser test (test/*.test.ts → test/dist/, for node --test).
import { copyFile, mkdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));

// The generated code in ../gen/es imports the protobuf and Connect runtimes;
// resolve them from web/node_modules, never from a node_modules that happens
// to be in a parent directory (the code generators' own, at the repository root).
const runtimesFromWeb = {
  name: "runtimes-from-web",
  setup(build) {
    build.onResolve({ filter: /^@(bufbuild|connectrpc)\// }, async (args) => {
      if (args.pluginData === "from-web") {
        return undefined;
      }
      const r = await build.resolve(args.path, { kind: args.kind, resolveDir: here, pluginData: "from-web" });
      if (r.errors.length > 0) {
        return { errors: r.errors };
      }
      return { path: r.path, sideEffects: r.sideEffects };
    });
  },
};

const common = {
  bundle: true,
  format: "esm",
  target: "es2022",
  logLevel: "warning",
  plugins: [runtimesFromWeb],
  absWorkingDir: here,
};

await rm(join(here, "dist"), { recursive: true, force: true });
await mkdir(join(here, "dist"), { recursive: true });
await Promise.all([
  esbuild.build({
    ...common,
    entryPoints: ["src/main.ts"],
    outfile: "dist/app.js",
    platform: "browser",
    minify: true,
    sourcemap: "linked",
  }),
  copyFile(join(here, "index.html"), join(here, "dist", "index.html")),
  esbuild.build({
    ...common,
    entryPoints: ["test/call.test.ts"],
    outdir: "test/dist",
    outExtension: { ".js": ".mjs" },
    platform: "node",
    external: ["playwright-core"],
    sourcemap: "inline",
  }),
]);
