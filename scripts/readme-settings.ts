// Rewrites the README's settings table from the settings table in src/config/settings.ts (the one `--help`
// prints), between the `<!-- settings:begin -->` and `<!-- settings:end -->` markers. test/ops-cli.test.ts fails
// when they differ. Usage: npm run docs:settings
import { readFileSync, writeFileSync } from "node:fs";
import { settingsMarkdown } from "../src/config/settings.js";

const path = new URL("../README.md", import.meta.url);
const readme = readFileSync(path, "utf8");
const marked = /(<!-- settings:begin[^>]*-->\n)[\s\S]*?(<!-- settings:end -->)/;
if (!marked.test(readme)) throw new Error("README.md has no <!-- settings:begin --> … <!-- settings:end --> markers");
writeFileSync(
  path,
  readme.replace(marked, (_, begin: string, end: string) => `${begin}${settingsMarkdown()}${end}`),
);
