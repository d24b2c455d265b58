// Builds the page into dist/ (or the directory given as the first argument).
// Output names are fixed and nothing time-dependent goes in, so a rebuild is
// byte-for-byte identical: check_bundle.sh relies on that.
import { build } from "esbuild";
import { copyFile, mkdir, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(fileURLToPath(import.meta.url));
const outdir = resolve(process.argv[2] ?? join(root, "dist"));

/** The npm packages whose code went into the bundle, from esbuild's metafile. */
function bundledPackages(metafile) {
  const names = new Set();
  for (const input of Object.keys(metafile.inputs)) {
    const match = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
    if (match) names.add(match[1]);
  }
  return [...names].sort();
}

async function licenseText(name) {
  const dir = join(root, "node_modules", name);
  const pkg = JSON.parse(await readFile(join(dir, "package.json"), "utf8"));
  const file = (await readdir(dir)).sort().find((f) => /^(licen[cs]e|copying)/i.test(f));
  const text = file ? (await readFile(join(dir, file), "utf8")).trim() : "(no license file in the package)";
  return `${pkg.name} ${pkg.version} (${pkg.license})\n\n${text}\n`;
}

await rm(outdir, { recursive: true, force: true });
await mkdir(outdir, { recursive: true });

const result = await build({
  absWorkingDir: root,
  entryPoints: { app: "src/main.js" },
  outdir,
  bundle: true,
  minify: true,
  format: "iife",
  platform: "browser",
  target: ["chrome111", "firefox113", "safari16.4"],
  // Only DailyMediaManager uses daily-js, and the page uses WavMediaManager.
  alias: { "@daily-co/daily-js": "./src/daily-stub.js" },
  define: { "process.env.NODE_ENV": '"production"' },
  banner: { js: "/* talkline web client; third-party licenses: licenses.txt */" },
  legalComments: "none",
  charset: "utf8",
  metafile: true,
  logLevel: "warning",
});

await copyFile(join(root, "index.html"), join(outdir, "index.html"));
const licenses = await Promise.all(bundledPackages(result.metafile).map(licenseText));
await writeFile(
  join(outdir, "licenses.txt"),
  `Third-party code bundled in app.js\n\n${licenses.join(`\n${"-".repeat(72)}\n\n`)}`,
);
